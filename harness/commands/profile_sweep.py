"""`harness profile`: a sweep of batch sizes and prompt lengths on one model, so that variants can be compared on
the user's own hardware (`harness profile --model smollm2-135m` beside `--model smollm2-135m:int8`).

Each configuration (batch size B, prompt length L, new tokens N) generates N tokens for B prompts of exactly L
tokens, greedily (end-of-sequence is a token like any other, so every row generates N), `repeats` times after one
untimed warm-up, under the profiler (harness/systems/profiler.py), once for each way of decoding asked for: with
the KV cache (the plain way), without it (each step reads the whole history again), speculatively. Prompts are
consecutive windows of the WikiText-2 test set's tokens: real text, the same for every model with the same
tokenizer. A row reports the median over repeats and the spread (min and max) of prefill and decode tokens/s, TTFT,
inter-token latency, request latency and the process's peak RSS; a speculative row adds the acceptance rate, the
tokens a sequence gains per target step and the draft's share of the time; with several ways, each row's decode
tokens/s and latency are also given as ratios to the plain way's in the same configuration, measured alternately
(each repeat runs every way once), so that the machine's drift falls on all of them alike.

Beside the table: this machine's measured fp32 matmul FLOP/s and, per prompt length, the FLOPs a token of prefill
costs, 2 x parameters (every weight multiplies once; the tied head counts once, the embedding lookup is free)
plus attention, 4 x layers x (L + 1) / 2 x heads x head_dim (QK^T and AV over the average causal context), so that
prefill tokens/s reads as a fraction of the machine's limit.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

import tasks
from harness.engine.requests import GenerateRequest
from harness.errors import UserError
from harness.models import packed_linear
from harness.models.adapter import ModelAdapter
from harness.models.speculation import Speculation
from harness.systems.profiler import Profiler


@dataclass(frozen=True)
class Decoding:
    """One way of generating, as a reference adapter can be set to (harness/models/reference.py)."""
    name: str  # for the table: "kv cache", "no kv cache", "speculative ngram=3,k=4"
    kv_cache: bool = True
    speculation: Speculation | None = None
    draft: ModelAdapter | None = None


PLAIN = Decoding("kv cache")
UNCACHED = Decoding("no kv cache", kv_cache=False)


@contextmanager
def decoding_as(adapter: ModelAdapter, decoding: Decoding) -> Iterator[None]:
    if not hasattr(adapter, "new_batcher"):  # transformers' implementation decodes one way only (check_decoding)
        yield
        return
    given = adapter.kv_cache, adapter.speculation, adapter.draft
    adapter.kv_cache, adapter.speculation, adapter.draft = decoding.kv_cache, decoding.speculation, decoding.draft
    try:
        yield
    finally:
        adapter.kv_cache, adapter.speculation, adapter.draft = given


@dataclass
class SweepRow:
    decoding: str
    batch_size: int
    prompt_length: int
    new_tokens: int
    measured: dict[str, list[float]]  # metric -> one value per repeat

    def summary(self) -> dict:
        row = {"decoding": self.decoding, "batch_size": self.batch_size, "prompt_length": self.prompt_length,
               "new_tokens": self.new_tokens}
        for metric, values in self.measured.items():
            values = [v for v in values if v is not None]
            row[metric] = statistics.median(values) if values else None
            row[metric + "_min"] = min(values) if values else None
            row[metric + "_max"] = max(values) if values else None
        return row


def text_windows(adapter: ModelAdapter, count: int, length: int) -> list[list[int]]:
    """`count` windows of exactly `length` tokens of WikiText-2 (the shipped test set), one after another."""
    wikitext = tasks.build("wikitext")
    tokens: list[int] = []
    for doc in wikitext.docs():
        tokens += adapter.encode(wikitext.requests(doc)[0].text)
        if len(tokens) >= count * length:
            break
    return [tokens[i * length:(i + 1) * length] for i in range(count)]


def one_run(adapter: ModelAdapter, prompts: list[list[int]], new_tokens: int) -> dict:
    """Generates new_tokens for each prompt, all in one batch, as the adapter is set to decode; its figures."""
    requests = [GenerateRequest("", stop=(), max_tokens=new_tokens) for _ in prompts]
    generators = [torch.Generator().manual_seed(0) for _ in prompts]
    profiler = Profiler(adapter.device)
    profiler.start()
    try:
        with adapter.timed_by(profiler):
            if hasattr(adapter, "new_batcher"):  # our reference models: the engine's continuous batcher
                adapter.new_batcher(len(prompts), None).run(requests, prompts, generators, ignore_eos=True)
            else:  # transformers' implementation, through the adapter's plain path
                adapter._generate_batch(requests, prompts, generators)
    finally:
        profiler.stop()
    summary = profiler.summary()
    run = summary["run"]

    def number(value):
        return value if isinstance(value, (int, float)) else None

    figures = {"prefill_tokens_per_s": number(run["prefill"]["tokens_per_s"]),
               "decode_tokens_per_s": number(run["decode"]["tokens_per_s"]),
               "ttft_s": number(run["ttft_s"]["p50"]),
               "itl_p50_s": number(run["inter_token_latency_s"]["p50"]),
               "itl_p95_s": number(run["inter_token_latency_s"]["p95"]),
               "latency_s": number(run["request_latency_s"]["generate"]["p50"]),
               "peak_rss_bytes": number(summary["memory"]["peak_rss_bytes"])}
    if "speculation" in run:
        speculation = run["speculation"]
        figures.update({"acceptance_rate": number(speculation["acceptance_rate"]),
                        "tokens_per_row_step": number(speculation["tokens_per_row_step"]),
                        "draft_share": number(speculation["draft_share"])})
    return figures


def sweep(adapter: ModelAdapter, batch_sizes: list[int], prompt_lengths: list[int], new_tokens: list[int],
          repeats: int, decodings: list[Decoding] = (PLAIN,), progress=print) -> list[SweepRow]:
    """Rows in the order of prompt length, new tokens, batch size and decoding; with several decodings, each row
    has its ratios to the first decoding's row of the same configuration (add_ratios)."""
    if max(prompt_lengths) + max(new_tokens) > adapter.max_length:
        raise UserError(f"--prompt-lengths up to {max(prompt_lengths)} plus --new-tokens {max(new_tokens)} "
                        f"exceed the model's {adapter.max_length} positions")
    windows = text_windows(adapter, max(batch_sizes), max(prompt_lengths))
    for decoding in decodings:  # warm-up, untimed
        with decoding_as(adapter, decoding):
            one_run(adapter, [w[:min(prompt_lengths)] for w in windows[:1]], min(min(new_tokens), 4))
    rows = []
    for length in prompt_lengths:
        for count in new_tokens:
            for batch_size in batch_sizes:
                prompts = [w[:length] for w in windows[:batch_size]]
                measured: list[dict[str, list[float]]] = [{} for _ in decodings]
                for _ in range(repeats):
                    for decoding, values in zip(decodings, measured):
                        with decoding_as(adapter, decoding):
                            for metric, value in one_run(adapter, prompts, count).items():
                                values.setdefault(metric, []).append(value)
                group = [SweepRow(d.name, batch_size, length, count, values) for d, values in zip(decodings, measured)]
                if len(decodings) > 1:
                    add_ratios(group)
                rows += group
                progress(f"batch {batch_size}, prompt {length}, {count} new tokens: done")
    return rows


def add_ratios(group: list[SweepRow]) -> None:
    """Each row's decode tokens/s and request latency over the first row's (the plain decoding), repeat by repeat:
    the runs of one repeat ran one after another, so their ratio cancels the machine's slower drift."""
    plain = group[0].measured
    for row in group:
        for metric in ("decode_tokens_per_s", "latency_s"):
            row.measured[metric + "_vs_plain"] = [
                mine / theirs if mine is not None and theirs else None
                for mine, theirs in zip(row.measured[metric], plain[metric])]


def matmul_flops_per_s(size: tuple[int, int, int] = (512, 576, 1536), seconds: float = 1.0) -> float:
    """fp32 matmul FLOP/s at a shape like SmolLM2's prefill (tokens x hidden @ hidden x intermediate), on the
    threads torch uses: the machine's practical limit for the forward's matmuls. The better of torch's two CPU
    kernels counts: MKL's (`a @ b`) and oneDNN's with a packed weight, which our linear layers use and which runs
    2.4x faster than MKL on this project's AMD machine (harness/models/packed_linear.py)."""
    return max(matmul_rates(size, seconds).values())


def matmul_rates(size: tuple[int, int, int] = (512, 576, 1536), seconds: float = 1.0) -> dict[str, float]:
    """FLOP/s of each kernel at `size`, over about `seconds` each."""
    m, k, n = size
    a, b = torch.randn(m, k), torch.randn(k, n)
    kernels = {"blas": lambda: a @ b}  # torch's BLAS: MKL in its x86 wheels
    if packed_linear.available():
        weight = packed_linear.pack(b.T.contiguous())
        kernels["onednn_packed"] = lambda: packed_linear.packed_linear(a, weight, None)
    rates = {}
    for name, kernel in kernels.items():
        for _ in range(3):
            kernel()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            kernel()
            count += 1
        rates[name] = 2 * m * k * n * count / (time.perf_counter() - started)
    return rates


def prefill_flops_per_token(adapter: ModelAdapter, prompt_length: int) -> float:
    config = adapter.model.config
    info = adapter.info()
    # A mixture-of-experts split runs only its chosen experts: its active parameters do the work.
    parameters = info.get("variant", {}).get("active_parameters_per_token") or info["parameters"]
    layers = config.num_hidden_layers
    width = getattr(config, "num_attention_heads", None) and config.num_attention_heads * config.head_dim
    width = width or config.n_embd  # GPT-2's config names
    return 2 * parameters + 4 * layers * (prompt_length + 1) / 2 * width


def add_flop_fractions(rows: list[dict], adapter: ModelAdapter, flops: float | None) -> None:
    """Adds each row's prefill FLOPs per token and the share of the machine's matmul limit its prefill used."""
    for row in rows:
        per_token = prefill_flops_per_token(adapter, row["prompt_length"])
        row["prefill_flops_per_token"] = per_token
        row["fraction_of_matmul_limit"] = (row["prefill_tokens_per_s"] * per_token / flops
                                           if flops and row["prefill_tokens_per_s"] else None)
