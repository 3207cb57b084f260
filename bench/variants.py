"""Benchmark: each model variant's quality, weight bytes and speed beside fp32, in one run on one machine.

    .venv/bin/python bench/variants.py [--wikitext-docs 3] [--mmlu abstract_algebra,anatomy]
                                       [--variants int8,int4-g64,...] [--markdown docs/variants.md]

For the default model (SmolLM2-135M-Instruct) and each variant: WikiText-2 word perplexity on the first N
documents and MMLU accuracy (0-shot) on a few subjects, through the same evaluator as `harness run`; the bytes of
the linear layers and of the whole model (measured from the tensors' storage); loglikelihood tokens/s over the
WikiText documents; and, for the mixture-of-experts split, the active parameters per token. Ratios are against
the fp32 row of the same run (this machine is noisy; rows measured in one process compare).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tasks  # noqa: E402
from harness.engine.evaluator import evaluate  # noqa: E402
from harness.models.registry import load_model  # noqa: E402

DEFAULT_VARIANTS = ["int8", "int4-g64", "int4-g32", "dynamic-int8", "moe-e8k2", "moe-e8k4", "moe-e8k6", "moe-e8k8"]
MODEL = "smollm2-135m"


def linear_bytes(adapter) -> int:
    """Bytes held by the layers a variant may change: every module but the embeddings, the head and the norms."""
    total, seen = 0, set()
    for name, module in adapter.model.named_modules():
        if name.endswith(("embed_tokens", "lm_head", "wte", "wpe")) or list(module.children()):
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            storage = tensor.untyped_storage()
            if tensor.dim() >= 2 or tensor.dtype in (torch.int8, torch.uint8, torch.qint8):
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total


def measure(variant: str | None, wikitext_docs: int, subjects: list[str]) -> dict:
    spec = MODEL if variant is None else f"{MODEL}:{variant}"
    adapter = load_model(spec, progress=lambda message: None)
    wikitext = tasks.build("wikitext")
    tokens = sum(len(adapter.encode(r.text)) for doc in wikitext.docs()[:wikitext_docs]
                 for r in wikitext.requests(doc))
    with torch.no_grad():  # warm-up: the first forward of a process pays for allocations the others reuse
        adapter.model(torch.randint(0, 1000, (1, 2048)))
    started = time.perf_counter()
    perplexity = evaluate(adapter, [wikitext], limit=wikitext_docs, batch_size=1).results["wikitext"]
    seconds = time.perf_counter() - started
    mmlu = evaluate(adapter, [tasks.build(f"mmlu_{s}") for s in subjects], batch_size=8)
    correct = sum(r["acc"] * r["n"] for r in mmlu.results.values() if "members" not in r)
    questions = sum(r["n"] for r in mmlu.results.values() if "members" not in r)
    report = adapter.info().get("variant", {})
    return {
        "variant": variant or "fp32",
        "word_perplexity": perplexity["word_perplexity"],
        "mmlu_acc": correct / questions,
        "linear_bytes": linear_bytes(adapter),
        "model_bytes": adapter.info()["bytes"],
        "tokens_per_s": tokens / seconds,
        "active_parameters": report.get("active_parameters_per_token"),
        "parameters": adapter.info()["parameters"],
    }


def table(rows: list[dict], wikitext_docs: int, subjects: list[str]) -> str:
    base = rows[0]
    lines = [f"| variant | word ppl (WikiText-2, {wikitext_docs} docs) | Δ ppl | MMLU acc ({', '.join(subjects)}) "
             "| linear bytes | × fp32 | model bytes | tokens/s | × fp32 | active params/token |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        active = row["active_parameters"] or row["parameters"]
        lines.append(
            f"| {row['variant']} | {row['word_perplexity']:.3f} "
            f"| {100 * (row['word_perplexity'] / base['word_perplexity'] - 1):+.2f} % | {row['mmlu_acc']:.4f} "
            f"| {row['linear_bytes'] / 1e6:.1f} MB | {row['linear_bytes'] / base['linear_bytes']:.3f} "
            f"| {row['model_bytes'] / 1e6:.1f} MB | {row['tokens_per_s']:.0f} "
            f"| {row['tokens_per_s'] / base['tokens_per_s']:.2f} | {active / 1e6:.1f} M |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wikitext-docs", type=int, default=3)
    parser.add_argument("--mmlu", default="abstract_algebra,anatomy")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    subjects = [s for s in args.mmlu.split(",") if s]
    rows = []
    for variant in [None, *[v for v in args.variants.split(",") if v]]:
        rows.append(measure(variant, args.wikitext_docs, subjects))
        print(f"{rows[-1]['variant']}: done", file=sys.stderr)
    text = table(rows, args.wikitext_docs, subjects)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
