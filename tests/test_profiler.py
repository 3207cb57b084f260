"""The systems profiler: percentile and throughput arithmetic on hand-made timings (a fake clock makes every
duration exact), TTFT and inter-token latencies from a hand-made generation timeline, the synchronize hook around
clock reads, the NVML sampler against a stand-in for the absent GPU, RSS, the hardware context, and the summary's
JSON form. Nothing here asserts how long anything takes."""

import gc
import json
import sys
import threading
from types import SimpleNamespace

import psutil
import pytest
import torch

from harness.systems.hardware import MemorySampler, NvmlSampler, hardware_context, not_available, open_nvml
from harness.systems.profiler import Profiler, device_synchronizer, flatten, percentiles

MS = 1_000_000  # nanoseconds


class FakeClock:
    """A perf_counter_ns whose time moves only when a test says so."""

    def __init__(self, log: list | None = None):
        self.now_ns = 0
        self.log = log

    def __call__(self) -> int:
        if self.log is not None:
            self.log.append("clock")
        return self.now_ns

    def advance(self, ms: int) -> None:
        self.now_ns += ms * MS


class FakeNvml:
    """A stand-in for the pynvml module (package nvidia-ml-py), because this machine has no NVIDIA GPU. It has the
    real module's names for what the profiler calls, its return types (structs with .used/.total/.free and
    .gpu/.memory; bytes, percent, millijoules as ints; names as str) and its errors: NVMLError(code), whose str()
    is NVML's message for the code. Each reading returns the next of its scripted values, then repeats the last."""

    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_LIBRARY_NOT_FOUND = 12

    class NVMLError(Exception):
        MESSAGES = {3: "Not Supported", 12: "NVML Shared Library Not Found"}

        def __init__(self, value: int):
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return self.MESSAGES[self.value]

    def __init__(self, memory_used=(1 << 30,), utilization=(50,), energy_mj=(1_000_000,), library=True,
                 energy_supported=True, utilization_supported=True):
        self._scripts = {"memory": list(memory_used), "utilization": list(utilization), "energy": list(energy_mj)}
        self.reads = {"memory": 0, "utilization": 0, "energy": 0}
        self.library = library
        self.energy_supported, self.utilization_supported = energy_supported, utilization_supported
        self.initialised = 0  # nvmlInit minus nvmlShutdown calls
        self.enough_reads = threading.Event()  # set once memory has been read three times

    def _next(self, name: str):
        script, index = self._scripts[name], self.reads[name]
        self.reads[name] += 1
        if self.reads["memory"] >= 3:
            self.enough_reads.set()
        return script[min(index, len(script) - 1)]

    def nvmlInit(self) -> None:
        if not self.library:
            raise self.NVMLError(self.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int):
        return SimpleNamespace(index=index)

    def nvmlDeviceGetName(self, handle) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = self._next("memory")
        return SimpleNamespace(total=80 << 30, free=(80 << 30) - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle):
        if not self.utilization_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=self._next("utilization"), memory=10)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle) -> int:
        if not self.energy_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return self._next("energy")


class FakeCuda:
    """A stand-in for torch.cuda's memory statistics, which a CPU build of torch does not have."""

    def __init__(self):
        self.resets = []

    def is_available(self) -> bool:
        return True

    def reset_peak_memory_stats(self, device) -> None:
        self.resets.append(device)

    def max_memory_allocated(self, device) -> int:
        return 3 << 30

    def max_memory_reserved(self, device) -> int:
        return 4 << 30


# ---- arithmetic ---------------------------------------------------------------------------------------------


def test_percentiles_interpolate_linearly_between_closest_ranks():
    # sorted 1, 2, 3, 4; h = 3q/100: p50 h=1.5 -> 2 + .5(3-2) = 2.5; p90 h=2.7 -> 3.7; p95 h=2.85 -> 3.85;
    # p99 h=2.97 -> 3.97; mean 10/4 = 2.5
    summary = percentiles([4, 1, 3, 2])
    assert summary == {"n": 4, "mean": 2.5, "p50": 2.5, "p90": pytest.approx(3.7), "p95": pytest.approx(3.85),
                       "p99": pytest.approx(3.97)}
    assert percentiles([7.0], qs=(50, 99.9)) == {"n": 1, "mean": 7.0, "p50": 7.0, "p99.9": 7.0}


def test_percentiles_of_nothing_are_not_available_rather_than_zero():
    summary = percentiles([])
    assert summary["n"] == 0
    assert summary["p50"] == summary["p99"] == summary["mean"] == {"value": None, "reason": "no samples"}


def test_scoring_batches_give_prefill_throughput_batch_sizes_and_latencies():
    clock = FakeClock()
    profiler = Profiler("cpu", clock=clock)
    with profiler.task("a"):
        with profiler.batch("loglikelihood", [6, 4]):
            clock.advance(20)
        with profiler.batch("loglikelihood", [5]):
            clock.advance(10)
    with profiler.task("b"):
        with profiler.batch("loglikelihood", [8]):
            clock.advance(50)
    summary = profiler.summary()
    task_a, task_b, run = summary["tasks"]["a"], summary["tasks"]["b"], summary["run"]
    # a: 6 + 4 + 5 = 15 tokens in 20 + 10 ms: 500 tokens/s; b: 8 tokens in 50 ms: 160 tokens/s;
    # the run: 23 tokens in 80 ms: 287.5 tokens/s
    assert task_a["prefill"] == {"tokens": 15, "seconds": pytest.approx(0.03), "tokens_per_s": pytest.approx(500)}
    assert task_b["prefill"]["tokens_per_s"] == pytest.approx(160)
    assert run["prefill"]["tokens_per_s"] == pytest.approx(287.5)
    assert task_a["wall_s"] == pytest.approx(0.03)
    # batches of 2, 1 and 1 rows: mean 4/3
    assert run["batches"] == {"count": 3, "size_mean": pytest.approx(4 / 3), "size_max": 2, "sizes": {"1": 2, "2": 1}}
    # each row waits for its whole batch: 20, 20, 10, 50 ms; sorted 10, 20, 20, 50; p50 h=1.5 -> 20;
    # p90 h=2.7 -> 20 + .7 (50 - 20) = 41; p99 h=2.97 -> 20 + .97 * 30 = 49.1
    latency = run["request_latency_s"]["loglikelihood"]
    assert latency["n"] == 4
    assert (latency["p50"], latency["p90"], latency["p99"]) == pytest.approx((0.020, 0.041, 0.0491))
    assert task_a["request_latency_s"]["loglikelihood"]["n"] == 3
    # no generation: decode, TTFT and inter-token latency are n/a, not zero
    assert run["decode"]["tokens_per_s"] == not_available("no decode time recorded")
    assert run["ttft_s"]["n"] == 0 and run["ttft_s"]["p50"]["value"] is None


def test_a_batch_that_fails_is_not_recorded():
    profiler = Profiler("cpu", clock=FakeClock())
    with pytest.raises(RuntimeError):
        with profiler.batch("loglikelihood", [3]):
            raise RuntimeError("out of memory")
    with pytest.raises(RuntimeError):
        with profiler.generation([3]):
            raise RuntimeError("out of memory")
    assert profiler.summary()["run"]["batches"]["count"] == 0


def test_generation_timeline_gives_ttft_inter_token_latencies_and_decode_throughput():
    clock = FakeClock()
    profiler = Profiler("cpu", clock=clock)
    clock.advance(100)
    with profiler.generation([4, 6]) as timeline:  # starts at 100 ms
        clock.advance(50)  # step 0, the prompt's forward pass: both rows get their first token at 150 ms
        timeline.token(0)
        timeline.token(1)
        timeline.step_done()
        clock.advance(10)  # step 1 ends at 160 ms: row 0 gets a token, row 1 chose EOS and is done
        timeline.token(0)
        timeline.finish(1)
        timeline.step_done()
        clock.advance(15)  # step 2 ends at 175 ms: row 0's last token; the batch ends without step_done()
        timeline.token(0)
    run = profiler.summary()["run"]
    # TTFT: 150 - 100 = 50 ms for both rows
    assert run["ttft_s"] == {"n": 2, "mean": pytest.approx(0.05), "p50": pytest.approx(0.05),
                             "p90": pytest.approx(0.05), "p95": pytest.approx(0.05), "p99": pytest.approx(0.05)}
    # row 0's tokens at 150, 160, 175 ms: 10 and 15 ms apart; p50 h=0.5 -> 12.5 ms; row 1 has a single token
    itl = run["inter_token_latency_s"]
    assert (itl["n"], itl["p50"], itl["mean"]) == (2, pytest.approx(0.0125), pytest.approx(0.0125))
    # row 1 finished at step 1 (160 ms), row 0 at the last step (175 ms): 60 and 75 ms; p50 67.5 ms
    latency = run["request_latency_s"]["generate"]
    assert (latency["n"], latency["p50"]) == (2, pytest.approx(0.0675))
    # prefill: 4 + 6 prompt tokens in step 0's 50 ms = 200/s; decode: the 2 tokens of steps 1 and 2 in 25 ms = 80/s
    assert run["prefill"] == {"tokens": 10, "seconds": pytest.approx(0.05), "tokens_per_s": pytest.approx(200)}
    assert run["decode"] == {"tokens": 2, "seconds": pytest.approx(0.025), "tokens_per_s": pytest.approx(80)}
    assert run["generated_tokens"] == 4  # 3 for row 0, 1 for row 1
    assert run["batches"]["sizes"] == {"2": 1}


def test_a_cuda_device_synchronizes_before_every_clock_read():
    log: list[str] = []
    clock = FakeClock(log)
    profiler = Profiler("cuda:0", clock=clock, synchronize=lambda: log.append("sync"))
    with profiler.task("a"):  # a read on entry and on exit
        with profiler.batch("loglikelihood", [3]):  # two reads
            clock.advance(5)
        with profiler.generation([3]) as timeline:  # one read on entry, one per step_done
            timeline.token(0)
            timeline.step_done()
    assert log == ["sync", "clock"] * 6


def test_the_default_synchronize_is_cudas_for_a_cuda_device_and_none_for_the_cpu(monkeypatch):
    synchronized = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: synchronized.append(device))
    device_synchronizer("cuda:1")()
    assert synchronized == [torch.device("cuda:1")]
    assert device_synchronizer("cpu") is None


# ---- NVML, against the stand-in -----------------------------------------------------------------------------


def sampled(nvml: FakeNvml, device: str = "cuda:0") -> dict:
    # A 10 s interval: the thread never polls, so the readings are exactly the one at start() and the one at stop().
    sampler = NvmlSampler(device, pynvml=nvml, interval_s=10)
    sampler.start()
    sampler.stop()
    return sampler.summary()


def test_nvml_sampler_records_memory_utilisation_and_the_energy_between_start_and_stop():
    nvml = FakeNvml(memory_used=(2 << 30, 5 << 30), utilization=(40, 90), energy_mj=(1_000_000, 1_250_500))
    summary = sampled(nvml)
    # memory 2 then 5 GiB: peak 5, mean 3.5; utilisation 40 then 90: mean 65; energy 1 250 500 - 1 000 000 mJ
    assert summary["memory_used_bytes"] == {"peak": 5 << 30, "mean": 3.5 * (1 << 30)}
    assert summary["utilization_percent"] == {"peak": 90, "mean": 65}
    assert summary["samples"] == 2
    assert summary["energy_j"] == pytest.approx(250.5)
    assert nvml.initialised == 0  # every nvmlInit has its nvmlShutdown


def test_nvml_sampler_polls_on_its_thread_between_start_and_stop():
    nvml = FakeNvml()
    sampler = NvmlSampler("cuda:0", pynvml=nvml, interval_s=0.01)
    sampler.start()
    assert nvml.enough_reads.wait(timeout=30)  # one read at start, the others by the thread
    sampler.stop()
    assert sampler.summary()["samples"] >= 3


def test_unsupported_readings_are_not_available_with_nvmls_reason():
    summary = sampled(FakeNvml(energy_supported=False, utilization_supported=False))
    assert summary["energy_j"] == {"value": None, "reason": "nvmlDeviceGetTotalEnergyConsumption: Not Supported"}
    assert summary["utilization_percent"] == {"value": None, "reason": "NVML: Not Supported"}
    assert summary["memory_used_bytes"]["peak"] == 1 << 30  # what is supported is still measured


def test_a_missing_nvml_library_or_binding_reads_as_not_available(monkeypatch):
    reason = "no NVIDIA GPU (pynvml: NVML Shared Library Not Found)"
    assert sampled(FakeNvml(library=False)) == {name: {"value": None, "reason": reason}
                                                for name in ("memory_used_bytes", "utilization_percent", "energy_j")}
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    module, why = open_nvml()
    assert module is None and why.startswith("no NVML bindings (pip install nvidia-ml-py)")


def test_a_cpu_run_does_not_report_the_gpu():
    nvml = FakeNvml()
    assert sampled(nvml, "cpu")["energy_j"] == not_available("the model runs on cpu, not an NVIDIA GPU")
    assert nvml.initialised == 0 and nvml.reads["memory"] == 0


def test_task_energy_comes_from_counter_readings_at_the_tasks_boundaries():
    # the counter is read at the run's start, the task's start and end, and the run's end
    nvml = FakeNvml(energy_mj=(1_000_000, 1_010_000, 1_060_000, 1_100_000))
    cuda = FakeCuda()
    profiler = Profiler("cuda:0", clock=FakeClock(), synchronize=lambda: None, pynvml=nvml, cuda=cuda,
                        gpu_interval_s=10, memory_interval_s=10)
    profiler.start()
    with profiler.task("a"):
        pass
    profiler.stop()
    summary = profiler.summary()
    assert summary["run"]["energy_j"] == pytest.approx(100)  # 1 100 000 - 1 000 000 mJ
    assert summary["tasks"]["a"]["energy_j"] == pytest.approx(50)  # 1 060 000 - 1 010 000 mJ
    assert cuda.resets == [torch.device("cuda:0")]
    assert summary["memory"]["cuda_max_allocated_bytes"] == 3 << 30
    assert summary["memory"]["cuda_max_reserved_bytes"] == 4 << 30


# ---- memory, the machine, the record ------------------------------------------------------------------------


def test_rss_sampling_sees_an_allocation_and_the_kernel_peak_covers_it():
    gc.collect()  # earlier tests' garbage, freed during the allocation, would hide it from the comparison
    sampler = MemorySampler("cpu", interval_s=10)
    sampler.start()
    block = b"x" * (64 << 20)  # 64 MiB, every page written
    with_block = psutil.Process().memory_info().rss
    sampler.sample()
    del block
    sampler.stop()
    summary = sampler.summary()
    assert summary["rss_samples"] == 3
    assert summary["end_rss_bytes"] > 0
    # The sample taken while the block lived saw it (within a few pages of what psutil read just before).
    assert summary["sampled_peak_rss_bytes"] >= with_block - (4 << 20)
    assert summary["peak_rss_bytes"] >= summary["sampled_peak_rss_bytes"]
    assert summary["cuda_max_allocated_bytes"] == not_available("the model runs on cpu, not CUDA")


def test_a_sampling_interval_below_10_ms_is_refused():
    with pytest.raises(ValueError):
        MemorySampler("cpu", interval_s=0.001)


def test_hardware_context_names_this_machines_cpu_and_cores():
    context = hardware_context("cpu", torch.float32, pynvml=FakeNvml())
    assert isinstance(context["cpu_model"], str) and context["cpu_model"]
    assert context["physical_cores"] >= 1
    assert context["logical_cores"] >= context["physical_cores"]
    assert context["torch_threads"] == torch.get_num_threads()
    assert (context["device"], context["dtype"]) == ("cpu", "float32")
    assert (context["gpu_driver"], context["gpus"]) == ("550.54.15", ["NVIDIA H100 80GB HBM3"])
    without = hardware_context("cpu", pynvml=FakeNvml(library=False))
    assert without["gpus"] == not_available("no NVIDIA GPU (pynvml: NVML Shared Library Not Found)")


def test_the_summary_is_json_and_flattens_into_rows():
    clock = FakeClock()
    profiler = Profiler("cpu", clock=clock, memory_interval_s=10)
    profiler.start()
    with profiler.task("a"):
        with profiler.batch("loglikelihood", [2]):
            clock.advance(4)
    profiler.stop()
    summary = profiler.summary()
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    rows = dict(flatten(summary))
    assert rows["tasks.a.prefill.tokens_per_s"] == pytest.approx(500)  # 2 tokens in 4 ms
    assert rows["run.batches.sizes.1"] == 1
    assert rows["gpu.energy_j"] == "n/a (the model runs on cpu, not an NVIDIA GPU)"


def test_flatten_names_nested_values_by_their_path():
    summary = {"a": {"b": 1, "c": not_available("why")}, "d": ["x", "y"], "e": 2.5}
    assert flatten(summary) == [("a.b", 1), ("a.c", "n/a (why)"), ("d", "x, y"), ("e", 2.5)]
