"""How far two fp32 computations of the same log-likelihood may differ: the tolerance of every test that compares
them, argued from fp32 arithmetic (and measured), instead of a constant chosen on one CPU.

A token's log-probability is z[y] - logsumexp(z) over the V = 49,152 logits z at its position. One fp32 rounding
moves a value x by at most U * |x| (U = 2**-24), so every rounding is relative to the size of the numbers involved:
the last step alone subtracts two numbers of the logits' size M (|z[y]| <= M and max z <= logsumexp(z) <=
max z + log V), and the roundings before it (dot products of 576 and 1,536 terms in each of 30 layers, attention
over the context, the sum of V exponentials) reach the log-probability in proportion to the same M. Two fp32
computations of one token that order those sums differently (another batch or sequence length, kernels for 8 SIMD
lanes on AVX2 or 16 on AVX-512, oneDNN or MKL, another implementation) therefore differ by K * U * M, where K
counts how many roundings' worth survive to the result. fp32 does not fix K a priori: the worst-case bound
(Higham's gamma_n for every dot product, compounded over 30 layers) is orders of magnitude above anything that
occurs, so K is measured, with a margin. The largest per-token difference measured was 43 U*M (the scorer at
batch sizes 1 and 8, the plain full-sequence forward with fp32 or float64 log_softmax, the transformers peer;
SmolLM2-135M on MMLU and free text) on this project's AMD EPYC with its AVX-512 kernels, with AVX2 kernels forced
(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2, what a CPU without AVX-512
runs), with SSE4.1 kernels (ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2),
and with the packed linear layers off (HARNESS_PACKED_LINEAR=0). K = 128 leaves three times that.

Over a continuation of n tokens the differences add: they come from the same kernels and mostly share a sign (a
rounding bias, not noise; measured, a 9-token sum differed by 5 times its largest single token), so the bound grows
as n, not as sqrt(n).

One more fp32 effect is kept out of the tests rather than bounded: torch's fp32 log_softmax adds the V exponentials
lane by lane, V/16 terms in sequence per lane with AVX-512 but V/8 with AVX2, so its own error doubles on a CPU
without AVX-512 (up to 3.3e-5 a token here). A test that computes an expected log-probability itself does so in
float64 from the fp32 logits; its value then carries no rounding worth counting (1e-16 relative), and the
comparison measures the code under test.
"""

from __future__ import annotations

import torch

U = 2.0 ** -24  # fp32's unit roundoff
K = 128  # roundings' worth of U * M a token's log-probability may move by (measured up to 43; see above)


def logprob_tolerance(tokens: int, logit_size: float) -> float:
    """The most two fp32 computations of a sum of `tokens` token log-probabilities may differ by, for logits of at
    most `logit_size` in magnitude at those tokens' positions."""
    return tokens * K * U * logit_size


def continuation_logit_sizes(adapter, requests) -> list[tuple[int, float]]:
    """For each loglikelihood request: its continuation's token count and the largest |logit| at the positions that
    predict those tokens (one plain forward pass of each distinct model input: the pair's tokens minus the last)."""
    sizes: dict[tuple[int, ...], torch.Tensor] = {}
    out = []
    with torch.inference_mode():
        for request in requests:
            context, continuation = adapter._encode_pair(request.context, request.continuation)
            n = len(continuation)
            if not n:  # nothing scored: log-likelihood 0 on every side
                out.append((0, 0.0))
                continue
            model_input = tuple(context + continuation)[:-1]
            if model_input not in sizes:
                logits, _ = adapter._forward(torch.tensor([model_input], device=adapter.device))
                sizes[model_input] = logits[0].abs().amax(-1)  # per position
            out.append((n, float(sizes[model_input][-n:].max())))
    return out
