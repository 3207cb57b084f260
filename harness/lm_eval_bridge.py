"""Our model adapters as an lm-evaluation-harness model named `harness`, so that every lm-eval task can run against
our reference models and their quantized, MoE and LoRA variants:

    harness-lm-eval --model harness --model_args spec=smollm2-135m:int8 --tasks TASKS [lm_eval's other flags]
    python -m harness.lm_eval_bridge ...            (the same)

lm-eval 0.4.13 finds no models outside its own package (it has no plugin entry point for them), so the model is
registered when this module is imported, and `harness-lm-eval` is lm-eval's own command line after that import.
From Python, `import harness.lm_eval_bridge` and then `lm_eval.simple_evaluate(model="harness", ...)`.

model_args: spec (default smollm2-135m), dtype (default float32); lm-eval's --device and --batch_size are passed
on (batch_size auto, or a number, is our batch policy's; results do not depend on it).
"""

from __future__ import annotations

import sys

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from harness.models.registry import load_model
from harness.engine.requests import GenerateRequest, LoglikelihoodRequest, RollingLoglikelihoodRequest

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default max_gen_toks


@register_model("harness")
class HarnessLM(LM):
    def __init__(self, spec: str = "smollm2-135m", dtype: str = "float32", device: str | None = None,
                 batch_size: int | str | None = None, **unused):
        super().__init__()
        if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
            device = "cpu"  # lm-eval's command line says cuda by default; like its hf model, fall back to the CPU
        self.adapter = load_model(spec, device=device, dtype=dtype,
                                  progress=lambda message: print(message, file=sys.stderr))
        self.spec = spec
        self.batch = None if batch_size in (None, "auto") or str(batch_size).startswith("auto") else int(batch_size)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        asked = [LoglikelihoodRequest(context, continuation) for context, continuation in (r.args for r in requests)]
        return [(result.logprob, result.is_greedy) for result in self.adapter.loglikelihood(asked, self.batch)]

    def loglikelihood_rolling(self, requests) -> list[float]:
        asked = [RollingLoglikelihoodRequest(r.args[0]) for r in requests]
        return self.adapter.loglikelihood_rolling(asked, self.batch)

    def generate_until(self, requests) -> list[str]:
        asked = []
        for request in requests:
            context, options = request.args
            until = options.get("until") or []
            asked.append(GenerateRequest(
                context, stop=tuple([until] if isinstance(until, str) else until),
                max_tokens=int(options.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)),
                temperature=float(options.get("temperature", 0.0)) if options.get("do_sample", False) else 0.0,
                top_p=float(options.get("top_p", 1.0))))
        return self.adapter.generate_until(asked, self.batch)

    # With lm-eval's --apply_chat_template, prompts go through the model's own chat template.
    @property
    def tokenizer_name(self) -> str:
        return self.spec

    @property
    def chat_template(self) -> str | None:
        return self.adapter.chat_template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.adapter.apply_chat_template(chat_history)


def cli() -> None:
    """lm-eval's command line, with the `harness` model registered."""
    from lm_eval.__main__ import cli_evaluate  # deferred: lm-eval's command line imports all its tasks

    cli_evaluate()


if __name__ == "__main__":
    cli()
