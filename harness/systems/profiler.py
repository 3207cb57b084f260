"""The systems profiler: where a run's time, memory and energy went, per task and for the whole run.

Timing. A scoring batch (loglikelihood, rolling windows: one forward pass) is one timed region; a generation batch
is a timeline of steps, each a forward pass and the choice of one token per row. Prefill is the tokens a scoring
batch reads, timed by the batch, and a generation's prompt tokens, timed by its first step; decode is the tokens
chosen by later steps, timed from the end of the first step to the end of the last. Padding is not counted. TTFT
is from the start of a request's batch to the end of the step that chose its first token; an inter-token latency
is the time between the steps that chose two consecutive tokens of a request; a request's latency ends with its
batch (scoring) or with the step in which it finished (generation).

Clock. time.perf_counter_ns, read after the device's synchronize (torch.cuda.synchronize(device)): CUDA kernels run
asynchronously, and a clock read without it would time the queueing, not the work. CUDA events would not stall the
host, but a generation step ends on the host anyway (the adapter moves the logits to the CPU to choose tokens).
Clock and synchronize are injectable, so that tests drive exact times without a GPU.

Memory and GPU (harness/systems/hardware.py). Process RSS (psutil, and the kernel's peak from getrusage), torch's CUDA
peaks, and through NVML the device's memory used, utilisation and energy; for the run, not per task.

Overhead. On the model's thread a batch reads the clock at each end, sums its rows' lengths and appends one record;
a generated token appends a step number to its row's list (O(1)); nothing is computed until summary(). Samplers poll on
daemon threads (every 50 ms for RSS and 100 ms for NVML by default, 10 ms at the least), each writing only its own
running count, sum and peak, read once its thread is joined: no lock is taken. NVML is thread-safe, so the model's
thread reads the energy counter at task boundaries while the sampler polls.

A value that cannot be measured is never zero: it is not_available(reason), {"value": None, "reason": ...}, e.g.
{"value": None, "reason": "no NVIDIA GPU (pynvml: NVML Shared Library Not Found)"}.

Speculative decoding (harness/models/generation.py): each target step adds its rows, the draft tokens proposed and
kept, and the time spent drafting and verifying to its task's counts, summarised as the acceptance rate, tokens a
row gains per target step and the draft's share of the time.

Per task: records made inside `with profiler.task(name):` count for that task and for the run. A batch belongs to
one task, so the evaluator, when profiling, gives the adapter each task's requests of a kind as their own call.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from harness.systems.hardware import MemorySampler, NvmlSampler, is_not_available, not_available


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 95, 99)) -> dict:
    """{"n", "mean", "p50", ...}. A percentile interpolates linearly between the closest ranks: for sorted values
    x_0..x_{n-1} and h = (n - 1) q / 100 it is x_floor(h) + (h - floor(h)) (x_ceil(h) - x_floor(h)), Hyndman and
    Fan's definition 7, numpy's default method "linear". No values: n/a."""
    if len(values) == 0:
        return {"n": 0, "mean": not_available("no samples"), **{f"p{q:g}": not_available("no samples") for q in qs}}
    array = np.asarray(values, dtype=np.float64)
    points = np.percentile(array, qs, method="linear")
    return {"n": len(values), "mean": float(array.mean()), **{f"p{q:g}": float(p) for q, p in zip(qs, points)}}


def flatten(summary: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, value) rows for a CSV or a table, in the summary's order; an n/a value reads "n/a (reason)",
    a list its items joined by ", "."""
    rows: list[tuple[str, Any]] = []
    for key, value in summary.items():
        if is_not_available(value):
            rows.append((prefix + key, f"n/a ({value['reason']})"))
        elif isinstance(value, dict):
            rows.extend(flatten(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, ", ".join(map(str, value)) if isinstance(value, list) else value))
    return rows


def device_synchronizer(device: str | torch.device) -> Callable[[], None] | None:
    """What waits for the device's queued work; None for the CPU, whose work is done when a call returns."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


@dataclass(slots=True)
class _Batch:
    kind: str
    task: str | None
    rows: int
    tokens: int
    start_ns: int
    end_ns: int


@dataclass(slots=True)
class _TaskSpan:
    task: str
    start_ns: int
    end_ns: int
    energy_mj: tuple[int | None, int | None]  # the GPU's energy counter at the start and the end


class GenerationTimeline:
    """One generation batch, used with `with`. For each step, once its tokens are chosen: token(row) for each row
    that got a token, finish(row) for each row that is done, then step_done(), which reads the clock. An open step
    is closed when the batch ends, and a row never finished finishes at the last step."""

    def __init__(self, profiler: Profiler, kind: str, prompt_tokens: Sequence[int]):
        self._profiler = profiler
        self.kind, self.task = kind, profiler.current_task
        self.rows, self.prompt_tokens = len(prompt_tokens), sum(prompt_tokens)
        self.start_ns = 0
        self.step_ns: list[int] = []  # when each step ended
        self.token_steps: list[list[int]] = [[] for _ in range(self.rows)]  # the step that chose each token
        self.finish_step: list[int | None] = [None] * self.rows
        self._step_open = False

    def __enter__(self) -> GenerationTimeline:
        self.start_ns = self._profiler.now()
        return self

    def token(self, row: int) -> None:
        self.token_steps[row].append(len(self.step_ns))
        self._step_open = True

    def finish(self, row: int) -> None:
        self.finish_step[row] = len(self.step_ns)
        self._step_open = True

    def step_done(self) -> None:
        self.step_ns.append(self._profiler.now())
        self._step_open = False

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            return  # a batch that failed measured nothing
        if self._step_open or not self.step_ns:
            self.step_done()
        self.finish_step = [len(self.step_ns) - 1 if s is None else s for s in self.finish_step]
        self._profiler._generations.append(self)


def _throughput(tokens: int, ns: int, phase: str) -> dict:
    return {"tokens": tokens, "seconds": ns / 1e9,
            "tokens_per_s": tokens / (ns / 1e9) if ns > 0 else not_available(f"no {phase} time recorded")}


def scope_summary(batches: Sequence[_Batch], generations: Sequence[GenerationTimeline]) -> dict:
    """Throughput, batch sizes and latency percentiles (in seconds) of one task's records, or of the run's."""
    prefill_tokens = prefill_ns = decode_tokens = decode_ns = generated_tokens = 0
    sizes: Counter = Counter()
    latency_ns: dict[str, list[int]] = defaultdict(list)
    ttft_ns: list[int] = []
    itl_ns: list[int] = []
    for batch in batches:
        prefill_tokens += batch.tokens
        prefill_ns += batch.end_ns - batch.start_ns
        sizes[batch.rows] += 1
        latency_ns[batch.kind] += [batch.end_ns - batch.start_ns] * batch.rows  # all rows are ready at the end
    for timeline in generations:
        steps, start = timeline.step_ns, timeline.start_ns
        prefill_tokens += timeline.prompt_tokens
        prefill_ns += steps[0] - start
        decode_ns += steps[-1] - steps[0]
        sizes[timeline.rows] += 1
        latency_ns[timeline.kind] += [steps[step] - start for step in timeline.finish_step]
        for token_steps in timeline.token_steps:
            generated_tokens += len(token_steps)
            decode_tokens += sum(1 for step in token_steps if step > 0)
            ttft_ns += [steps[token_steps[0]] - start] if token_steps else []
            itl_ns += [steps[b] - steps[a] for a, b in zip(token_steps, token_steps[1:])]
    count = sum(sizes.values())
    seconds = lambda values_ns: percentiles([v / 1e9 for v in values_ns])  # noqa: E731
    return {
        "batches": {"count": count,
                    "size_mean": sum(s * n for s, n in sizes.items()) / count if count else not_available("no batches"),
                    "size_max": max(sizes) if sizes else not_available("no batches"),
                    "sizes": {str(size): sizes[size] for size in sorted(sizes)}},
        "prefill": _throughput(prefill_tokens, prefill_ns, "prefill"),
        "decode": _throughput(decode_tokens, decode_ns, "decode"),
        "generated_tokens": generated_tokens,
        "request_latency_s": {kind: seconds(values) for kind, values in latency_ns.items()},
        "ttft_s": seconds(ttft_ns),
        "inter_token_latency_s": seconds(itl_ns),
    }


def speculation_summary(counts: Counter) -> dict:
    """Speculative decoding's figures from its summed counts. A row's target step yields its kept drafts and one
    token of the target's own (fewer only where the sequence ended within the step)."""
    seconds = (counts["draft_ns"] + counts["target_ns"]) / 1e9
    return {
        "target_steps": counts["steps"], "row_steps": counts["rows"],
        "proposed": counts["proposed"], "accepted": counts["accepted"],
        "acceptance_rate": (counts["accepted"] / counts["proposed"] if counts["proposed"]
                            else not_available("no drafts proposed")),
        "tokens_per_row_step": (counts["accepted"] + counts["rows"]) / counts["rows"],
        "draft_s": counts["draft_ns"] / 1e9, "target_s": counts["target_ns"] / 1e9,
        "draft_share": counts["draft_ns"] / 1e9 / seconds if seconds > 0 else not_available("no time recorded"),
    }


class Profiler:
    """Records timed regions, per task, and samples memory and the GPU between start() and stop().

    `clock` returns nanoseconds; `synchronize` defaults to device_synchronizer(device); `pynvml` (the NVML module)
    and `cuda` (torch.cuda) are injectable, so that tests run without a GPU."""

    def __init__(self, device: str | torch.device = "cpu", clock: Callable[[], int] = time.perf_counter_ns,
                 synchronize: Callable[[], None] | None = None, pynvml: Any = None, cuda: Any = torch.cuda,
                 memory_interval_s: float = 0.05, gpu_interval_s: float = 0.1):
        self.device = torch.device(device)
        self._clock = clock
        self._synchronize = synchronize if synchronize is not None else device_synchronizer(self.device)
        self.memory = MemorySampler(self.device, memory_interval_s, cuda)
        self.gpu = NvmlSampler(self.device, pynvml, gpu_interval_s)
        self.current_task: str | None = None
        self._batches: list[_Batch] = []
        self._generations: list[GenerationTimeline] = []
        self._task_spans: list[_TaskSpan] = []
        self._speculation: dict[str | None, Counter] = defaultdict(Counter)  # task -> speculative steps' counts
        self._run_ns: list[int] = []  # the start, then the stop

    def now(self) -> int:
        """The clock, in nanoseconds, once the device's queued work is done."""
        if self._synchronize is not None:
            self._synchronize()
        return self._clock()

    def start(self) -> None:
        self.memory.start()
        self.gpu.start()
        self._run_ns = [self.now()]

    def stop(self) -> None:
        self._run_ns.append(self.now())
        self.gpu.stop()
        self.memory.stop()

    @contextmanager
    def task(self, name: str) -> Iterator[None]:
        """Records made inside count for task `name`, and for the run."""
        outer, self.current_task = self.current_task, name
        start_ns, start_mj = self.now(), self.gpu.energy_mj()
        try:
            yield
        finally:
            end_ns = self.now()
            self._task_spans.append(_TaskSpan(name, start_ns, end_ns, (start_mj, self.gpu.energy_mj())))
            self.current_task = outer

    @contextmanager
    def batch(self, kind: str, input_tokens: Sequence[int]) -> Iterator[None]:
        """A scoring batch, one forward pass; `input_tokens` holds each row's length. A batch that fails is not
        recorded."""
        start_ns = self.now()
        yield
        self._batches.append(_Batch(kind, self.current_task, len(input_tokens), sum(input_tokens),
                                    start_ns, self.now()))

    def generation(self, prompt_tokens: Sequence[int], kind: str = "generate") -> GenerationTimeline:
        """A generation batch (use with `with`); `prompt_tokens` holds each row's prompt length."""
        return GenerationTimeline(self, kind, prompt_tokens)

    def speculation_step(self, rows: int, proposed: int, accepted: int, draft_ns: int, target_ns: int) -> None:
        """One speculative target step over `rows` sequences: the drafts proposed and kept, the time drafting took
        and the time the target's pass and the acceptance took."""
        self._speculation[self.current_task].update(
            steps=1, rows=rows, proposed=proposed, accepted=accepted, draft_ns=draft_ns, target_ns=target_ns)

    def summary(self) -> dict:
        """The run's and each task's timing, the run's memory and GPU: a JSON-serializable dict."""
        gpu = self.gpu.summary()
        wall_s = ((self._run_ns[1] - self._run_ns[0]) / 1e9 if len(self._run_ns) == 2
                  else not_available("the profiler was not started and stopped"))
        run = {"wall_s": wall_s, "energy_j": gpu["energy_j"], **scope_summary(self._batches, self._generations)}
        if self._speculation:
            run["speculation"] = speculation_summary(sum(self._speculation.values(), Counter()))
        tasks = {}
        for name in dict.fromkeys(span.task for span in self._task_spans):
            spans = [span for span in self._task_spans if span.task == name]
            energies = [self.gpu.energy_j(*span.energy_mj) for span in spans]
            missing = [energy for energy in energies if is_not_available(energy)]
            tasks[name] = {"wall_s": sum(span.end_ns - span.start_ns for span in spans) / 1e9,
                           "energy_j": missing[0] if missing else sum(energies),
                           **scope_summary([b for b in self._batches if b.task == name],
                                           [g for g in self._generations if g.task == name])}
            if name in self._speculation:
                tasks[name]["speculation"] = speculation_summary(self._speculation[name])
        return {"run": run, "tasks": tasks, "memory": self.memory.summary(), "gpu": gpu}


class _Untimed:
    """The timeline of a generation batch when no profiler is set: every call does nothing."""

    def __enter__(self) -> "_Untimed":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def token(self, row: int) -> None:
        pass

    def finish(self, row: int) -> None:
        pass

    def step_done(self) -> None:
        pass


UNTIMED = _Untimed()
