"""What the profiler samples and reports about the machine: process memory, the GPU through NVML, and the context
(CPU, cores, torch, GPU name and driver). Split from harness/systems/profiler.py, which times the work and owns the
summary; see its docstring for the overhead design.

Samplers poll on daemon threads, each writing only its own running count, sum and peak, read once its thread is
joined, so no lock is taken. A value that cannot be measured is not_available(reason), never zero.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
from typing import Any, Callable

import psutil
import torch

MIN_INTERVAL_S = 0.01  # a sampler polling faster would cost more than it tells


def not_available(reason: str) -> dict:
    """The one representation of a value that could not be measured."""
    return {"value": None, "reason": reason}


def is_not_available(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {"value", "reason"} and value["value"] is None


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
        import resource  # deferred: Unix only
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
        kernel_peak = process_peak_rss_bytes()
        # The kernel's peak misses nothing between samples, but counts a little differently from psutil's RSS
        # (it can read a few pages lower): the peak is the larger of the two.
        peak = max(kernel_peak, self.peak_bytes) if isinstance(kernel_peak, int) else self.peak_bytes
        return {"peak_rss_bytes": peak, "sampled_peak_rss_bytes": self.peak_bytes,
                "end_rss_bytes": self.last_bytes, "rss_samples": self.samples, **cuda}


def open_nvml(pynvml: Any = None) -> tuple[Any, str | None]:
    """(the NVML module, initialised, None) or (None, why not). `pynvml` is the module of the nvidia-ml-py package
    or a stand-in for tests; None imports the real one."""
    if pynvml is None:
        try:
            import pynvml  # deferred: optional, NVIDIA GPUs only
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
