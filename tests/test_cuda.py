"""The CUDA paths on a real NVIDIA GPU: what tests/test_profiler.py checks against stand-ins (NVML's memory, utilisation
and energy readings, torch.cuda's memory peaks, the synchronize before every clock read), and that the reference
model computes on CUDA in fp32 the log-likelihoods it computes on the CPU, within fp32 rounding.

Every test here is skipped where torch sees no CUDA device (this project's CI and development machines have none);
`bench/gpu_check.sh` runs them on a lent GPU with `python3 -m pytest -q tests/test_cuda.py -p no:cacheprovider`.
They use the tiny random LLaMA of tests/tiny.py (2 layers, hidden 32, SmolLM2's tokenizer), so they download nothing
and take seconds; the tokenizer comes from the converted SmolLM2 folder (conftest.smollm2_folder).

Tolerance of CUDA against the CPU (tests/fp32.py argues the CPU's): both sides compute in fp32, so they differ only in
the order of their sums: cuBLAS's tiles (and split-K) instead of oneDNN's or MKL's, the GPU's tree reductions in
RMSNorm, softmax and logsumexp, scaled_dot_product_attention's fused kernel with its running maximum instead of the
CPU's. Each is a reordering of the same fp32 sums over the same lengths, which tests/fp32.py bounds by K * U * M a
token (M the logits' size, U = 2**-24, K = 128 roundings' worth, 43 measured across CPU kernels). Blocked and tree
orders have smaller worst-case errors than sequential ones (Higham: gamma_(n/b + b) and gamma_(log2 n) against
gamma_n), so a GPU's orders give no reason to expect a larger K; K is a measurement, though, not a derivation, so
these tests are where the bound is checked on CUDA, and `bench/gpu_check.sh` reports the K that CUDA reaches on the
real model. The bound holds only while fp32 matmuls run in fp32: with TF32 every product's inputs are rounded to 10
mantissa bits (U = 2**-11, 8,192 times coarser). torch's default is no TF32 for matmuls and the harness does not
change it; the comparison tests check that rather than loosen the tolerance.
"""

import json
import math
import time

import pytest
import torch

from harness.cli import main
from harness.engine.requests import GenerateRequest, RollingLoglikelihoodRequest
from harness.models.lm_eval_tokens import rolling_windows
from harness.models.reference import ReferenceAdapter
from harness.systems.hardware import NvmlSampler, _nvml_handle, hardware_context, is_not_available
from harness.systems.profiler import Profiler
from tests.fp32 import continuation_logit_sizes, logprob_tolerance
from tests.test_scoring import few_shot_requests
from tests.tiny import make_tiny_llama_folder

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason=f"needs a CUDA GPU: torch {torch.__version__} "
           + ("sees no CUDA device" if torch.version.cuda else "is built without CUDA"))

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, smollm2_folder):
    # 2,048 positions: a GSM8K 5-shot prompt (about 1,070 tokens) and its 256 new tokens fit without truncation.
    return make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), smollm2_folder, max_positions=2048)


@pytest.fixture(scope="module")
def tiny_cpu(tiny_folder):
    adapter = ReferenceAdapter("hf:tiny", tiny_folder, device="cpu")
    adapter.pack_linear_layers()  # as load_model does: the CPU side runs its usual kernels
    return adapter


@pytest.fixture(scope="module")
def tiny_cuda(tiny_folder):
    return ReferenceAdapter("hf:tiny", tiny_folder, device="cuda")


def busy(seconds: float) -> None:
    """Keeps the GPU computing for about `seconds`: 4096 x 4096 fp32 products, one after another."""
    x = torch.randn(4096, 4096, device=CUDA)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            x = torch.nn.functional.normalize(x @ x, dim=-1)
        torch.cuda.synchronize(CUDA)


def nvml_total_and_power_limit() -> tuple[int, float | None]:
    """The device's memory in bytes and its enforced power limit in watts (None where NVML cannot say)."""
    import pynvml  # deferred: nvidia-ml-py, read here only where a GPU is

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        try:
            limit_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
        except pynvml.NVMLError:
            limit_w = None
        return pynvml.nvmlDeviceGetMemoryInfo(handle).total, limit_w
    finally:
        pynvml.nvmlShutdown()


def require_fp32_matmuls() -> None:
    assert not torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "highest", (
        "TF32 is on for fp32 matmuls: the fp32 tolerance of this test does not apply (see the module docstring)")


# ---- the machine and NVML --------------------------------------------------------------------------------------


def test_hardware_context_names_the_gpu_and_its_driver():
    context = hardware_context("cuda", torch.float32)
    assert context["device"] == "cuda" and context["torch_cuda"] == torch.version.cuda
    assert isinstance(context["gpu_driver"], str) and context["gpu_driver"][0].isdigit(), context["gpu_driver"]
    assert torch.cuda.get_device_name(CUDA) in context["gpus"], context["gpus"]


def test_nvml_finds_the_gpu_by_the_uuid_cuda_gives():
    """hardware._nvml_handle asks NVML for the GPU by its UUID, which CUDA and NVML share (their indices can differ,
    under CUDA_VISIBLE_DEVICES for one); a UUID written otherwise than NVML writes it would fall back to the index
    without a word, so the UUID itself is checked here."""
    import pynvml  # deferred: nvidia-ml-py, read here only where a GPU is

    pynvml.nvmlInit()
    try:
        by_uuid = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(CUDA).uuid}")
        assert pynvml.nvmlDeviceGetUUID(_nvml_handle(pynvml, CUDA)) == pynvml.nvmlDeviceGetUUID(by_uuid)
    finally:
        pynvml.nvmlShutdown()


def test_nvml_reads_memory_utilisation_and_energy_while_the_gpu_works():
    sampler = NvmlSampler("cuda", interval_s=0.01)
    block = torch.empty(1 << 30, dtype=torch.uint8, device=CUDA)  # 1 GiB, held while sampling
    sampler.start()
    started = time.perf_counter()
    busy(1.5)  # NVML's utilisation averages over a period of 1/6 s to 1 s: 1.5 s of work fills one
    reserved = torch.cuda.memory_reserved(CUDA)
    sampler.stop()
    elapsed = time.perf_counter() - started
    del block
    summary = sampler.summary()
    total, power_limit_w = nvml_total_and_power_limit()
    assert summary["samples"] >= 10, summary
    memory = summary["memory_used_bytes"]
    # NVML counts every allocation on the device, this process's CUDA context and torch's reserved blocks included.
    assert reserved > 1 << 30 and reserved <= memory["peak"] <= total, (memory, reserved, total)
    assert 0 < memory["mean"] <= memory["peak"]
    utilization = summary["utilization_percent"]
    assert 0 < utilization["peak"] <= 100 and 0 < utilization["mean"] <= utilization["peak"], utilization
    energy = summary["energy_j"]
    if is_not_available(energy) and "Not Supported" in energy["reason"]:
        pytest.skip(f"this GPU has no total-energy counter: {energy['reason']}")
    # Above zero, and below what the board may draw at its enforced limit over the window (twice, for the
    # counter's update period at either end).
    assert isinstance(energy, float) and energy > 0, energy
    assert power_limit_w is None or energy <= 2 * power_limit_w * elapsed + 1, (energy, power_limit_w, elapsed)


def test_a_timed_batch_waits_for_the_gpu():
    """torch.cuda._sleep queues a kernel that spins for a number of clock cycles and returns at once; the batch's
    time must include it (the profiler synchronizes before reading the clock), as CUDA events measure it."""
    profiler = Profiler("cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with profiler.batch("loglikelihood", [1]):
        start.record()
        torch.cuda._sleep(200_000_000)  # about 0.1 s at 2 GHz, 0.6 s at an idle clock
        end.record()
    end.synchronize()
    kernel_s = start.elapsed_time(end) / 1000
    (batch,) = profiler._batches
    timed_s = (batch.end_ns - batch.start_ns) / 1e9
    assert kernel_s > 0.05 and timed_s >= 0.95 * kernel_s, (timed_s, kernel_s)


def test_a_model_call_on_cuda_records_torch_peaks_and_nvml_readings(tiny_cuda):
    tiny_cuda.profiler = profiler = Profiler("cuda", gpu_interval_s=0.01)
    try:
        profiler.start()
        with profiler.task("ll"):
            tiny_cuda.loglikelihood(few_shot_requests())
        profiler.stop()
    finally:
        tiny_cuda.profiler = None
    summary = profiler.summary()
    memory, gpu = summary["memory"], summary["gpu"]
    model_bytes = sum(p.numel() * p.element_size() for p in tiny_cuda.model.parameters())
    # The peak since start() counts what was allocated then (the model) and what the call added.
    assert memory["cuda_max_allocated_bytes"] > model_bytes > 0, (memory, model_bytes)
    assert memory["cuda_max_reserved_bytes"] >= memory["cuda_max_allocated_bytes"]
    # torch's cache does not give memory back by itself, so NVML's last sample (at stop) saw all it reserved.
    assert gpu["memory_used_bytes"]["peak"] >= memory["cuda_max_reserved_bytes"], (gpu, memory)
    assert gpu["utilization_percent"]["peak"] >= 0
    for energy in (summary["run"]["energy_j"], summary["tasks"]["ll"]["energy_j"]):
        assert (isinstance(energy, float) and energy >= 0) or "Not Supported" in energy["reason"], energy
    assert summary["tasks"]["ll"]["prefill"]["tokens"] > 0 and summary["run"]["wall_s"] > 0


# ---- the same numbers on CUDA as on the CPU ------------------------------------------------------------------


def test_loglikelihoods_on_cuda_equal_the_cpus_within_fp32_rounding(tiny_cpu, tiny_cuda):
    """Few-shot requests (shared preambles computed once, one- and many-token answers, duplicates, an empty
    context) under the auto batch policy and at batch size 1, on each device."""
    require_fp32_matmuls()
    requests = few_shot_requests()
    sizes = continuation_logit_sizes(tiny_cpu, requests)
    expected = tiny_cpu.loglikelihood(requests)
    for batch_size in (None, 1):
        got = tiny_cuda.loglikelihood(requests, batch_size=batch_size)
        for request, e, g, (n, size) in zip(requests, expected, got, sizes):
            assert abs(e.logprob - g.logprob) <= logprob_tolerance(n, size), (batch_size, request, e, g, n, size)
        # The greedy flags compare argmaxes: the tiny model's logits are sharp (tests/tiny.py), so no near-tie flips.
        assert [e.is_greedy for e in expected] == [g.is_greedy for g in got]


def test_rolling_loglikelihoods_on_cuda_equal_the_cpus_within_fp32_rounding(smollm2_folder, tmp_path_factory):
    """On a 64-position copy of the tiny model, so that the texts span several windows, batched together."""
    require_fp32_matmuls()
    folder = make_tiny_llama_folder(tmp_path_factory.mktemp("tiny64"), smollm2_folder, max_positions=64)
    cpu, cuda = ReferenceAdapter("hf:tiny", folder), ReferenceAdapter("hf:tiny", folder, device="cuda")
    texts = [" ".join(f"word{i}" for i in range(n)) for n in (5, 40, 90, 200)]
    requests = [RollingLoglikelihoodRequest(text) for text in texts]
    expected, got = cpu.loglikelihood_rolling(requests), cuda.loglikelihood_rolling(requests)
    for text, e, g in zip(texts, expected, got):
        # Every token of the text is predicted once, in one of its windows: M is the largest logit over them.
        tokens, size = cpu.encode(text), 0.0
        with torch.inference_mode():
            for context, continuation in rolling_windows(tokens, cpu.prefix_token_id, cpu.max_length):
                ids = (context + continuation)[:-1]
                logits = cpu.model(torch.tensor([ids]))[0, len(ids) - len(continuation):]
                size = max(size, logits.abs().max().item())
        assert abs(e - g) <= logprob_tolerance(len(tokens), size), (text[:20], e, g, len(tokens), size)


def test_greedy_generation_on_cuda_is_the_cpus(tiny_cpu, tiny_cuda):
    """Continuous batches of mixed prompt lengths, a stop string and max_tokens; the tiny model's sharp logits leave
    no near-tie that fp32 rounding could flip, so the texts must be equal, token for token."""
    prompts = ["Once upon a time", "The", "A much longer prompt to force left padding, and then some more words",
               "Question: what is two plus two?\nAnswer:"]
    requests = [GenerateRequest(p, stop=("\n\n",), max_tokens=24) for p in prompts]
    expected = tiny_cpu.generate(requests, batch_size=3)
    got = tiny_cuda.generate(requests, batch_size=3)
    assert [(g.tokens, g.finish) for g in got] == [(e.tokens, e.finish) for e in expected]


def test_bfloat16_on_cuda_runs_and_gives_finite_log_likelihoods(tiny_folder):
    """bf16 has 8 significant bits: no fp32 bound applies, and bench/gpu_check.sh measures its distance on the real
    model. Here: it loads as bf16 on the GPU and its answers are log-probabilities."""
    adapter = ReferenceAdapter("hf:tiny", tiny_folder, device="cuda", dtype=torch.bfloat16)
    assert {p.dtype for p in adapter.model.parameters()} == {torch.bfloat16}
    results = adapter.loglikelihood(few_shot_requests()[:12])
    assert all(math.isfinite(r.logprob) and r.logprob <= 0 for r in results), results


# ---- a whole run -----------------------------------------------------------------------------------------------


def test_a_run_on_cuda_records_the_gpus_figures(tmp_path, tiny_folder, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", f"hf:{tiny_folder}", "--device", "cuda", "--tasks", "mmlu_anatomy,gsm8k",
                 "--limit", "2", "--no-cache", "--output", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    record = json.loads((out / "results.json").read_text())
    assert record["model"]["device"] == "cuda" and record["settings"]["device"] == "cuda"
    systems = record["systems"]
    assert systems["memory"]["cuda_max_allocated_bytes"] > 0
    assert systems["gpu"]["memory_used_bytes"]["peak"] >= systems["memory"]["cuda_max_reserved_bytes"]
    assert systems["gpu"]["samples"] >= 1 and "peak" in systems["gpu"]["utilization_percent"]
    energy = systems["run"]["energy_j"]
    assert (isinstance(energy, float) and energy >= 0) or "Not Supported" in energy["reason"], energy
    assert systems["tasks"]["gsm8k"]["decode"]["tokens"] > 0
    hardware = record["environment"]["hardware"]
    assert torch.cuda.get_device_name(CUDA) in hardware["gpus"] and hardware["device"] == "cuda"
    assert "systems (" in printed.out
