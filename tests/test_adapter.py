"""The adapter's three request methods: batching, windows, generation and the peer implementation."""

from dataclasses import replace

import pytest
import torch

import tasks
from harness.engine.requests import GenerateRequest, LoglikelihoodRequest, RollingLoglikelihoodRequest
from harness.models.lm_eval_tokens import rolling_windows
from harness.models.reference import ReferenceAdapter
from harness.models.transformers_peer import TransformersAdapter
from tests.fp32 import continuation_logit_sizes, logprob_tolerance
from tests.tiny import make_tiny_llama_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_folder):
    folder = make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), smollm2_folder, max_positions=16)
    return ReferenceAdapter("hf:tiny", folder)


def mmlu_requests(count: int):
    task = tasks.build("mmlu_astronomy")
    docs = task.docs()[:count]
    return [replace(r, context=r.context.text()) for doc in docs for r in task.requests(doc)]


def test_loglikelihood_does_not_move_with_batch_size(smollm2):
    requests = mmlu_requests(6) + [LoglikelihoodRequest("", "An empty context."),
                                   LoglikelihoodRequest("Trailing space ", "moves to the continuation")]
    one = smollm2.loglikelihood(requests, batch_size=1)
    eight = smollm2.loglikelihood(requests, batch_size=8)
    # fp32 on both sides, in other batches: each result within its own bound (tests/fp32.py).
    for a, b, (n, size) in zip(one, eight, continuation_logit_sizes(smollm2, requests)):
        assert abs(a.logprob - b.logprob) <= logprob_tolerance(n, size)
    assert [a.is_greedy for a in one] == [b.is_greedy for b in eight]


def test_loglikelihood_is_the_sum_of_token_logprobs(smollm2):
    context, continuation = "The capital of France is", " Paris, a city on the Seine."
    context_ids = smollm2.encode(context)
    whole = smollm2.encode(context + continuation)
    with torch.no_grad():
        logits = smollm2.model(torch.tensor([whole]))[0, len(context_ids) - 1:-1]
    # The log-softmax in float64, from the fp32 logits: torch's fp32 log_softmax would add its own error, which
    # doubles on a CPU without AVX-512 (tests/fp32.py); what is compared is then the adapter's fp32 arithmetic.
    logprobs = logits.double().log_softmax(-1)
    targets = whole[len(context_ids):]
    expected = sum(logprobs[i, t].item() for i, t in enumerate(targets))
    (result,) = smollm2.loglikelihood([LoglikelihoodRequest(context, continuation)])
    assert result.logprob == pytest.approx(expected, abs=logprob_tolerance(len(targets), logits.abs().max().item()))


def test_rolling_windows_as_lm_eval_defines_them():
    # lm-eval 0.4.13, utils.get_rolling_token_windows(max_seq_len=10, context_len=1) + make_disjoint_window,
    # worked by hand for 37 tokens: full windows after the first see one token of context, and the last,
    # shorter window is conditioned on as many earlier tokens as fill the model's window of 10.
    t = list(range(100, 137))
    assert rolling_windows(t, prefix_token=1, max_length=10) == [
        ([1], t[0:10]),
        ([t[9]], t[10:20]),
        ([t[19]], t[20:30]),
        (t[26:30], t[30:37]),
    ]
    assert rolling_windows(t[:10], 1, 10) == [([1], t[:10])]
    assert rolling_windows(t[:11], 1, 10) == [([1], t[:10]), (t[:10], t[10:11])]
    assert rolling_windows([], 1, 10) == []


def test_rolling_loglikelihood_over_several_windows(tiny):
    text = "Robert Boulter is an English film, television and theatre actor. " * 4
    tokens = tiny.encode(text)
    assert len(tokens) > 3 * tiny.max_length  # several windows of 16
    with torch.no_grad():
        expected, size = 0.0, 0.0
        for context, continuation in rolling_windows(tokens, tiny.prefix_token_id, tiny.max_length):
            ids = (context + continuation)[:-1]
            logits = tiny.model(torch.tensor([ids]))[0, len(ids) - len(continuation):]
            size = max(size, logits.abs().max().item())
            logprobs = logits.double().log_softmax(-1)  # float64, as in the test above
            expected += sum(logprobs[i, t].item() for i, t in enumerate(continuation))
    one = tiny.loglikelihood_rolling([RollingLoglikelihoodRequest(text)], batch_size=1)
    many = tiny.loglikelihood_rolling([RollingLoglikelihoodRequest("Short."), RollingLoglikelihoodRequest(text)],
                                      batch_size=8)
    # Every token of the text is scored once, each at most `size` in logit; fp32 bounds as in tests/fp32.py.
    assert one[0] == pytest.approx(expected, abs=logprob_tolerance(len(tokens), size))
    assert many[1] == pytest.approx(one[0], abs=logprob_tolerance(len(tokens), size))


def naive_greedy(adapter, context: str, steps: int) -> list[int]:
    ids = adapter.encode(context)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(adapter.model(torch.tensor([ids + out]))[0, -1].argmax())
            if token == adapter.tokenizer.eos_token_id:
                break
            out.append(token)
    return out


def test_greedy_generation_with_cache_and_padding_equals_naive_decoding(tiny):
    contexts = ["Once upon a time", "The", "A much longer prompt to force left padding"]
    expected = [tiny.tokenizer.decode(naive_greedy(tiny, c, 5), skip_special_tokens=True) for c in contexts]
    requests = [GenerateRequest(c, max_tokens=5) for c in contexts]
    assert tiny.generate_until(requests, batch_size=3) == expected
    assert tiny.generate_until(requests, batch_size=1) == expected


def test_generation_stops_at_stop_sequence(smollm2):
    prompt = "<|im_start|>user\nCount: one, two, three, four, five, six.<|im_end|>\n<|im_start|>assistant\n"
    free = smollm2.generate_until([GenerateRequest(prompt, max_tokens=20)])[0]
    stop = free.strip()[3:6]
    assert stop and stop in free
    cut = smollm2.generate_until([GenerateRequest(prompt, stop=(stop,), max_tokens=20)])[0]
    assert cut == free[:free.find(stop)]


@pytest.mark.slow  # loads the real model a second time, in transformers' implementation
def test_reference_matches_transformers_on_the_real_model(smollm2):
    peer = TransformersAdapter("transformers:smollm2", smollm2.folder)
    requests = mmlu_requests(2)
    ours = smollm2.loglikelihood(requests, batch_size=4)
    theirs = peer.loglikelihood(requests, batch_size=4)
    # fp32 on both sides; the implementations differ only in summation order (bounds: tests/fp32.py).
    for a, b, (n, size) in zip(ours, theirs, continuation_logit_sizes(smollm2, requests)):
        assert abs(a.logprob - b.logprob) <= logprob_tolerance(n, size)
    prompt = [GenerateRequest("The three primary colours are", max_tokens=8)]
    assert smollm2.generate_until(prompt) == peer.generate_until(prompt)
