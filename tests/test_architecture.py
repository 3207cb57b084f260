"""The shape of the code, checked: no import cycles (imports inside functions included), imports inside functions
only where they defer a heavy dependency and say so, every model implementing the one model interface with the
same signatures, and the run configuration surviving its trip through a run folder. The direction of the layers is
checked by `lint-imports` (pyproject.toml's contracts) in .ci/run."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import grimp
import pytest

from harness.config import EngineConfig, ModelConfig, OutputConfig, RunConfig, TaskConfig, ToxicityConfig
from harness.engine.cache import CachingModel
from harness.engine.model import LanguageModel
from harness.errors import UserError
from harness.models.adapter import ModelAdapter
from harness.models.openai_api import OpenAIAdapter
from harness.models.reference import ReferenceAdapter
from harness.models.transformers_peer import TransformersAdapter

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "tasks", "reports")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that all reach each other (a cycle, when a group has two)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(group)

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_tarjan_finds_a_cycle_it_is_shown():
    """The check below can fail: a planted cycle is found, a chain is not."""
    assert sorted(map(sorted, strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))) == \
        [["a", "b", "c"], ["d"]]


def test_no_import_cycles_counting_imports_inside_functions():
    graph = grimp.build_graph(*PACKAGES)
    # grimp reads every import statement of a module, at any depth: one placed inside a function counts.
    modules = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    cycles = [sorted(group) for group in strongly_connected(modules) if len(group) > 1]
    assert cycles == []


def inner_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module imported, its explanation) of each import inside a function. The explanation is the import's
    own line, the other imports of its block and the line above the block: a comment on any of them counts."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    module = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                    first = inner.lineno - 1
                    while first > 0 and lines[first - 1].strip().startswith(("import ", "from ")):
                        first -= 1
                    explanation = "".join(lines[max(first - 1, 0):inner.end_lineno])
                    found.append((inner.lineno, module or "", explanation))
    return found


def test_imports_inside_functions_defer_a_heavy_dependency_and_say_so():
    unexplained, internal = [], []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module, source in inner_imports(path):
                where = f"{path.relative_to(ROOT)}:{line}"
                if "#" not in source:
                    unexplained.append(where)
                # Our own modules are imported at the top, except by the command line, which loads a command's
                # module (and torch with it) only when that command runs.
                if module.split(".")[0] in PACKAGES and path != ROOT / "harness/cli/__init__.py":
                    internal.append(where)
    assert unexplained == [] and internal == []


@pytest.mark.parametrize("model", [ModelAdapter, ReferenceAdapter, TransformersAdapter, OpenAIAdapter, CachingModel])
def test_every_model_implements_the_interface_with_its_signatures(model):
    assert issubclass(model, LanguageModel)
    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until", "truncates", "cannot_answer",
                 "apply_chat_template", "info", "working_on", "close"):
        declared = inspect.signature(getattr(LanguageModel, name))
        implemented = inspect.signature(getattr(model, name))
        assert list(implemented.parameters) == list(declared.parameters), f"{model.__name__}.{name}"
    if model is not ModelAdapter:  # the torch base leaves _forward to its subclasses
        assert not inspect.isabstract(model), f"{model.__name__} leaves abstract methods"


def test_the_run_configuration_round_trips_through_json():
    config = RunConfig(model=ModelConfig("smollm2-135m:int8", dtype="bfloat16"),
                       tasks=TaskConfig(("mmlu", "gsm8k"), limit=3, data_dir=Path("/data"), temperature=1),
                       engine=EngineConfig(batch_size=None, seed=7, use_cache=False),
                       toxicity=ToxicityConfig(checkpoint=Path("/ckpt")), output=OutputConfig(Path("runs/x")))
    again = RunConfig.from_json(config.to_json())
    assert again == config and isinstance(again.tasks.temperature, float)
    assert config.replace(engine={"seed": 8}).engine == EngineConfig(batch_size=None, seed=8, use_cache=False)


@pytest.mark.parametrize("damage", [
    lambda c: {**c, "format": "other/1"},
    lambda c: {**c, "tasks": {**c["tasks"], "limit": "3"}},
    lambda c: {**c, "tasks": {**c["tasks"], "names": "mmlu"}},
    lambda c: {**c, "engine": {**c["engine"], "unknown": 1}},
    lambda c: {key: value for key, value in c.items() if key != "model"},
])
def test_a_damaged_run_configuration_is_refused(damage):
    config = RunConfig(model=ModelConfig("smollm2-135m"), tasks=TaskConfig(("mmlu",))).to_json()
    with pytest.raises(UserError):
        RunConfig.from_json(damage(config))
