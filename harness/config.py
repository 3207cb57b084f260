"""The run configuration: the one input of `harness run`, as a tree of frozen dataclasses.

The command line builds it (harness/cli) and does nothing else; `run(config)` takes it; each component receives the
part it needs, by name. The run folder stores it as written (run.json, and results.json under "config"), so that
`harness run --resume` and `harness rerun` read it back instead of parsing a command line again.

Paths are made absolute when the configuration is built, so that a recorded run can be resumed or rerun from
another working directory.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError

FORMAT = "harness-run-config/1"


@dataclass(frozen=True)
class ModelConfig:
    spec: str  # NAME[:VARIANT][+lora=PATH], hf:PATH, transformers:PATH or openai:MODEL@URL
    device: str = "cpu"
    dtype: str = "float32"
    max_length: int | None = None  # a window shorter than the model's own; None: the model's
    revision: str | None = None  # openai: models: the user's name for what the server runs


@dataclass(frozen=True)
class TaskConfig:
    names: tuple[str, ...]  # tasks and groups as the user gave them
    limit: int | None = None  # the first N documents of each task
    limits: tuple[str, ...] = ()  # "NAME=N": the first N documents of a task, or of each task of a group
    num_fewshot: int | None = None  # None: each task's own default
    data_dir: Path | None = None  # a local copy of data that is not shipped (MNLI, QQP)
    samples: int | None = None  # generations per document for sampling tasks
    temperature: float | None = None
    perturb: tuple[str, ...] = ()  # --perturb's KIND=VALUE specs: each a variant of every task, paired with it


@dataclass(frozen=True)
class PromptConfig:
    chat_template: bool = False
    system_prompt: str | None = None
    fewshot_as_multiturn: bool = True  # with a chat template: each few-shot example its own turn


@dataclass(frozen=True)
class EngineConfig:
    batch_size: int | None = None  # None: auto (a token budget); results do not depend on it
    seed: int = 1234
    use_cache: bool = True  # reuse and store responses in the response cache
    speculative: str | None = None  # speculative decoding: "draft=SPEC,k=K" or "ngram=N,k=K"
    kv_cache: bool = True  # False: decode without the KV cache (every step reads the whole text again)
    max_new_tokens: int | None = None  # a cap on every generation's new tokens, judgments too; None: each task's own


@dataclass(frozen=True)
class JudgeConfig:
    spec: str | None = None  # the judge model of judged tasks (MT-Bench); None: the evaluated model
    max_failures: float = 0.2  # the share of unreadable judgments above which a judged task fails
    scoring: str = "generate"  # "generate": the judge writes its judgment (FastChat); "logprob": G-Eval's weights


@dataclass(frozen=True)
class SandboxConfig:
    allow_code_execution: bool = False
    timeout_s: float = 3.0  # wall-clock seconds per program
    workers: int | None = None  # programs run in parallel (None: 2 per core, at most 8)
    allow_weak_isolation: bool = False  # run without the kernel's walls where the kernel refuses them


@dataclass(frozen=True)
class ToxicityConfig:
    scorer: str = "profanity-check"
    checkpoint: Path | None = None
    hf_config: Path | None = None  # the config and tokenizer folder detoxify needs offline


@dataclass(frozen=True)
class OutputConfig:
    folder: Path | None = None  # None: runs/<time>-<model>
    results_db: Path | None = None  # None: $HARNESS_RESULTS_DB or $HARNESS_HOME/results.sqlite


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    tasks: TaskConfig
    prompts: PromptConfig = field(default_factory=PromptConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_json(self) -> dict:
        return {"format": FORMAT, **_to_json(self)}

    @classmethod
    def from_json(cls, data: Any) -> RunConfig:
        """The configuration a run folder recorded; a damaged or foreign one is refused with one line."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise UserError(f"not a run configuration of format {FORMAT} (found {found!r})")
        try:
            return _from_json(cls, {key: value for key, value in data.items() if key != "format"})
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"a damaged run configuration ({error})") from None

    def replace(self, **parts: Any) -> RunConfig:
        """A copy with some fields of its parts changed, e.g. replace(output={"folder": path})."""
        return dataclasses.replace(self, **{name: dataclasses.replace(getattr(self, name), **changes)
                                            for name, changes in parts.items()})


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_json(kind: Any, value: Any) -> Any:
    """Rebuilds a value of the annotated type `kind` from what _to_json wrote, checking its shape."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"{kind.__name__} must be an object, not {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        unknown = set(value) - set(hints)
        if unknown:
            raise KeyError(f"unknown field {sorted(unknown)[0]!r} in {kind.__name__}")
        return kind(**{name: _from_json(hints[name], item) for name, item in value.items()})
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else ()
    if options:  # X | None
        if value is None and type(None) in options:
            return None
        (kind,) = [option for option in options if option is not type(None)]
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise TypeError(f"expected a list of strings, got {value!r}")
        return tuple(value)
    if kind is Path:
        if not isinstance(value, str):
            raise TypeError(f"expected a path, got {value!r}")
        return Path(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value
