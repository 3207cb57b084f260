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

Memory and GPU. Process RSS (psutil, and the kernel's peak from getrusage), torch's CUDA peaks, and through NVML
the device's memory used, utilisation and energy; for the run, not per task.

Overhead. On the model's thread a batch reads the clock at each end, sums its rows' lengths and appends one record;
a generated token appends a step number to its row's list (O(1)); nothing is computed until summary(). Samplers poll on
daemon threads (every 50 ms for RSS and 100 ms for NVML by default, 10 ms at the least), each writing only its own
running count, sum and peak, read once its thread is joined: no lock is taken. NVML is thread-safe, so the model's
thread reads the energy counter at task boundaries while the sampler polls.

A value that cannot be measured is never zero: it is not_available(reason), {"value": None, "reason": ...}, e.g.
{"value": None, "reason": "no NVIDIA GPU (pynvml: NVML Shared Library Not Found)"}.

Per task: records made inside `with profiler.task(name):` count for that task and for the run. A batch belongs to
one task, so the evaluator, when profiling, gives the adapter each task's requests of a kind as their own call.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import psutil
import torch

MIN_INTERVAL_S = 0.01  # a sampler polling faster would cost more than it tells


def not_available(reason: str) -> dict:
    """The one representation of a value that could not be measured."""
    return {"value": None, "reason": reason}


def is_not_available(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {"value", "reason"} and value["value"] is None


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


class _Poller:
    """Calls self.sample() every interval_s on a daemon thread, between _start_thread() and _stop_thread()."""

    def __init__(self, interval_s: float):
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"a sampling interval below {MIN_INTERVAL_S} s costs more than it measures")
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.sample()  # defined by the subclass

    def _start_thread(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._poll, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None


def process_peak_rss_bytes() -> int | dict:
    """The kernel's high-water mark of this process's resident set since it started (getrusage's ru_maxrss)."""
    try:
        import resource
    except ImportError:
        return not_available("resource.getrusage is not available on this platform")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class MemorySampler(_Poller):
    """Process RSS polled with psutil between start() and stop(), and on CUDA torch's peaks since start().

    peak_rss_bytes is the kernel's getrusage peak, the authoritative one: the kernel raises it whenever a page
    enters the resident set, so no spike falls between two samples. It counts from the process's start, model
    loading included, which is the memory a run needs. sampled_peak_rss_bytes is the largest sample in the
    profiled window. `cuda` is torch.cuda, injectable for tests."""

    def __init__(self, device: str | torch.device, interval_s: float = 0.05, cuda: Any = torch.cuda):
        super().__init__(interval_s)
        self.device, self._cuda = torch.device(device), cuda
        self._process = psutil.Process()
        self.samples = self.peak_bytes = self.last_bytes = 0
        self._cuda_peaks: dict = {}
        self._cuda_unavailable = "CUDA memory was not measured"

    def sample(self) -> None:
        self.last_bytes = self._process.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, self.last_bytes)
        self.samples += 1

    def start(self) -> None:
        if self.device.type != "cuda":
            self._cuda_unavailable = f"the model runs on {self.device.type}, not CUDA"
        elif not self._cuda.is_available():
            self._cuda_unavailable = f"torch.cuda is not available (torch {torch.__version__})"
        else:
            self._cuda_unavailable = None
            self._cuda.reset_peak_memory_stats(self.device)
        self.sample()
        self._start_thread()

    def stop(self) -> None:
        self._stop_thread()
        self.sample()
        if self._cuda_unavailable is None:
            self._cuda_peaks = {"cuda_max_allocated_bytes": self._cuda.max_memory_allocated(self.device),
                                "cuda_max_reserved_bytes": self._cuda.max_memory_reserved(self.device)}

    def summary(self) -> dict:
        if not self.samples:
            return {"peak_rss_bytes": not_available("the memory sampler was not started")}
        cuda = self._cuda_peaks or {name: not_available(self._cuda_unavailable)
                                    for name in ("cuda_max_allocated_bytes", "cuda_max_reserved_bytes")}
        return {"peak_rss_bytes": process_peak_rss_bytes(), "sampled_peak_rss_bytes": self.peak_bytes,
                "end_rss_bytes": self.last_bytes, "rss_samples": self.samples, **cuda}


def open_nvml(pynvml: Any = None) -> tuple[Any, str | None]:
    """(the NVML module, initialised, None) or (None, why not). `pynvml` is the module of the nvidia-ml-py package
    or a stand-in for tests; None imports the real one."""
    if pynvml is None:
        try:
            import pynvml
        except ImportError as error:
            return None, f"no NVML bindings (pip install nvidia-ml-py): {error}"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return None, f"no NVIDIA GPU (pynvml: {error})"
    return pynvml, None


def _nvml_handle(nvml: Any, device: torch.device) -> Any:
    """The NVML handle of a CUDA device. CUDA numbers the visible GPUs, fastest first unless
    CUDA_DEVICE_ORDER=PCI_BUS_ID; NVML numbers all of them by PCI bus. The UUID names the same GPU in both."""
    if not torch.cuda.is_available():  # a stand-in NVML in tests: there is no CUDA device to ask
        return nvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    try:
        return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    except nvml.NVMLError:  # a MIG slice's UUID names no whole GPU: the index is the best guess
        return nvml.nvmlDeviceGetHandleByIndex(index)


class _Running:
    """A polled quantity's count, sum and peak, or why it cannot be read."""

    def __init__(self, read: Callable[[], float]):
        self.read, self.reason = read, None
        self.count = self.total = self.peak = 0

    def summary(self) -> dict:
        if self.reason or not self.count:
            return not_available(self.reason or "no samples")
        return {"peak": self.peak, "mean": self.total / self.count}


class NvmlSampler(_Poller):
    """Through NVML: device memory used (by every process on the GPU) and utilisation (the share of the last sample
    period in which a kernel ran), polled; energy from nvmlDeviceGetTotalEnergyConsumption, a counter in
    millijoules since the driver loaded (unsupported on some GPUs), read at start() and stop()."""

    def __init__(self, device: str | torch.device, pynvml: Any = None, interval_s: float = 0.1):
        super().__init__(interval_s)
        self.device, self._pynvml = torch.device(device), pynvml
        self._nvml: Any = None
        self._handle: Any = None
        self.unavailable: str | None = "the NVML sampler was not started"
        self.energy_reason: str | None = None
        self._energy_mj: list[int | None] = [None, None]
        self._quantities: dict[str, _Running] = {}

    def start(self) -> None:
        if self.device.type != "cuda":
            self.unavailable = f"the model runs on {self.device.type}, not an NVIDIA GPU"
            return
        nvml, self.unavailable = open_nvml(self._pynvml)
        if nvml is None:
            return
        try:
            handle = _nvml_handle(nvml, self.device)
        except nvml.NVMLError as error:
            self.unavailable = f"NVML cannot find {self.device}: {error}"
            nvml.nvmlShutdown()
            return
        self._nvml, self._handle = nvml, handle
        self._quantities = {"memory_used_bytes": _Running(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used),
                            "utilization_percent": _Running(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)}
        self._energy_mj[0] = self.energy_mj()
        self.sample()
        self._start_thread()

    def energy_mj(self) -> int | None:
        """The energy counter now, or None when it cannot be read (energy_reason says why)."""
        if self._nvml is None or self.energy_reason is not None:
            return None
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._nvml.NVMLError as error:
            self.energy_reason = f"nvmlDeviceGetTotalEnergyConsumption: {error}"
            return None

    def sample(self) -> None:
        for quantity in self._quantities.values():
            if quantity.reason is None:
                try:
                    value = quantity.read()
                except self._nvml.NVMLError as error:  # e.g. a MIG slice reports no utilisation
                    quantity.reason = f"NVML: {error}"
                    continue
                quantity.count, quantity.total = quantity.count + 1, quantity.total + value
                quantity.peak = max(quantity.peak, value)

    def stop(self) -> None:
        if self._nvml is not None:
            self._stop_thread()
            self.sample()
            self._energy_mj[1] = self.energy_mj()
            self._nvml.nvmlShutdown()

    def energy_j(self, start_mj: int | None, end_mj: int | None) -> float | dict:
        """Joules between two readings of the counter, or n/a with why."""
        if self.unavailable is not None:
            return not_available(self.unavailable)
        if start_mj is None or end_mj is None:
            return not_available(self.energy_reason or "the energy counter was not read")
        return (end_mj - start_mj) / 1000

    def summary(self) -> dict:
        if self.unavailable is not None:
            return {name: not_available(self.unavailable)
                    for name in ("memory_used_bytes", "utilization_percent", "energy_j")}
        return {**{name: quantity.summary() for name, quantity in self._quantities.items()},
                "samples": self._quantities["memory_used_bytes"].count,
                "energy_j": self.energy_j(*self._energy_mj)}


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

    def summary(self) -> dict:
        """The run's and each task's timing, the run's memory and GPU: a JSON-serializable dict."""
        gpu = self.gpu.summary()
        wall_s = ((self._run_ns[1] - self._run_ns[0]) / 1e9 if len(self._run_ns) == 2
                  else not_available("the profiler was not started and stopped"))
        run = {"wall_s": wall_s, "energy_j": gpu["energy_j"], **scope_summary(self._batches, self._generations)}
        tasks = {}
        for name in dict.fromkeys(span.task for span in self._task_spans):
            spans = [span for span in self._task_spans if span.task == name]
            energies = [self.gpu.energy_j(*span.energy_mj) for span in spans]
            missing = [energy for energy in energies if is_not_available(energy)]
            tasks[name] = {"wall_s": sum(span.end_ns - span.start_ns for span in spans) / 1e9,
                           "energy_j": missing[0] if missing else sum(energies),
                           **scope_summary([b for b in self._batches if b.task == name],
                                           [g for g in self._generations if g.task == name])}
        return {"run": run, "tasks": tasks, "memory": self.memory.summary(), "gpu": gpu}


def cpu_model() -> str | dict:
    """The CPU's name: /proc/cpuinfo's "model name" on Linux, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or not_available("neither /proc/cpuinfo nor platform.processor() names the CPU")


def hardware_context(device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
                     pynvml: Any = None) -> dict:
    """What the run ran on, for the run record: CPU, cores, memory, torch, the device and dtype, NVIDIA GPUs."""
    physical = psutil.cpu_count(logical=False)
    context = {
        "cpu_model": cpu_model(),
        "physical_cores": physical or not_available("psutil cannot count physical cores on this platform"),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda or not_available("this torch is built without CUDA"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(torch.device(device)),
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else not_available("no dtype given"),
    }
    nvml, reason = open_nvml(pynvml)
    if nvml is None:
        return {**context, "gpu_driver": not_available(reason), "gpus": not_available(reason)}
    try:
        context["gpu_driver"] = _text(nvml.nvmlSystemGetDriverVersion())
        context["gpus"] = [_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))
                           for i in range(nvml.nvmlDeviceGetCount())]
    except nvml.NVMLError as error:
        context["gpu_driver"] = context["gpus"] = not_available(f"NVML: {error}")
    finally:
        nvml.nvmlShutdown()
    return context


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # nvidia-ml-py before 11.515 returned bytes
