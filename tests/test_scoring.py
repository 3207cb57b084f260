"""The fast loglikelihood path (harness/models/scoring.py) against the plain one: shared prefixes, heads only where
needed and any batch policy give the same log-probabilities (within 1e-4) and the same greedy flags."""

import random

import pytest

from harness.models.reference import ReferenceAdapter
from harness.models.scoring import MIN_SAVED_TOKENS, MIN_SHARED_STEP, batches, prefix_groups
from harness.engine.requests import LoglikelihoodRequest, RollingLoglikelihoodRequest
from tests.tiny import make_tiny_llama_folder

TOLERANCE = 1e-4  # fp32: a prefix's keys computed alone differ from the whole input's in the last bits


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm2):
    return ReferenceAdapter("hf:tiny", make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), smollm2.folder))


def few_shot_requests(seed: int = 0) -> list[LoglikelihoodRequest]:
    """Shaped like MMLU 5-shot and TruthfulQA mc2: two subjects, each with its own long preamble shared by every
    question; one-token answers and multi-token answers sharing their first words; duplicates; edge cases."""
    rng = random.Random(seed)
    requests = []
    for subject in ("anatomy", "astronomy"):
        preamble = f"The following are multiple choice questions (with answers) about {subject}.\n\n" + "".join(
            f"Q: what is {rng.randint(1, 99)} plus {rng.randint(1, 99)}?\nA. {rng.randint(1, 9)}\nB. "
            f"{rng.randint(1, 9)}\nAnswer: A\n\n" for _ in range(5))
        for question in range(4):
            context = preamble + f"Q: name number {question} of the {subject} list.\nA. one\nB. two\nAnswer:"
            for answer in (" A", " B", " The answer is one", " The answer is two, surely", " A"):
                requests.append(LoglikelihoodRequest(context, answer))
    requests += [LoglikelihoodRequest("", "An empty context is the prefix token."),
                 LoglikelihoodRequest("Short.", " x"), LoglikelihoodRequest("Short. ", "x")]
    rng.shuffle(requests)
    return requests


def compare(model, call, policies):
    model.plain_paths = True
    try:
        expected = call(batch_size=8)
    finally:
        model.plain_paths = False
    for batch_size in policies:
        got = call(batch_size=batch_size)
        yield batch_size, expected, got


@pytest.mark.slow  # 43 few-shot requests under four batch policies on the real model (about 17 s)
def test_loglikelihood_equals_the_plain_path_for_every_batch_policy(smollm2):
    requests = few_shot_requests()
    for batch_size, expected, got in compare(smollm2, lambda **kw: smollm2.loglikelihood(requests, **kw),
                                             [1, 5, None]):
        worst = max(abs(e.logprob - g.logprob) for e, g in zip(expected, got))
        assert worst < TOLERANCE, (batch_size, worst)
        assert [e.is_greedy for e in expected] == [g.is_greedy for g in got]


def test_rolling_loglikelihood_equals_the_plain_path(tiny_llama):
    """On a 64-position model, so that documents span several windows, batched across documents."""
    texts = [" ".join(f"word{i}" for i in range(n)) for n in (5, 40, 90, 200)]
    requests = [RollingLoglikelihoodRequest(text) for text in texts]
    for batch_size, expected, got in compare(tiny_llama, lambda **kw: tiny_llama.loglikelihood_rolling(requests, **kw),
                                             [1, 2, None]):
        assert max(abs(e - g) for e, g in zip(expected, got)) < TOLERANCE


def test_a_shared_prefix_is_computed_once(smollm2):
    """Counted through the profiler's batches: 60 inputs over two preambles cost two preamble passes plus the
    questions, not 60 preambles."""
    from harness.systems.profiler import Profiler

    requests = [r for r in few_shot_requests() if r.continuation in (" A", " B")]
    profiler = Profiler(smollm2.device)
    profiler.start()
    with smollm2.timed_by(profiler), smollm2.working_on("mc"):
        smollm2.loglikelihood(requests, batch_size=None)
    profiler.stop()
    computed = profiler.summary()["tasks"]["mc"]["prefill"]["tokens"]
    whole = {tuple(smollm2.encode(r.context)) for r in requests}  # one-token answers: an input per question
    assert computed < 0.4 * sum(len(tokens) for tokens in whole)


def test_prefix_groups_share_prefixes_worth_sharing_and_leave_each_member_a_token():
    shared = tuple(range(100, 100 + MIN_SAVED_TOKENS + 5))
    inputs = sorted([shared + (1, 2), shared + (1, 3, 4), shared + (2,), (7, 8, 9), (7, 8, 10)])
    groups = prefix_groups(inputs, 0)
    assert groups[0] == (0, [(7, 8, 9)]) and groups[1] == (0, [(7, 8, 10)])  # 2 shared tokens: not worth it
    length, members = groups[2]
    assert members == [shared + (1, 2), shared + (1, 3, 4), shared + (2,)] and length == len(shared)
    # The same group one level down: nothing left worth sharing.
    assert all(len(group) == 1 for _, group in prefix_groups(members, length))
    one_longer = sorted([shared, shared + (5,)])
    assert prefix_groups(one_longer, 0) == [(len(shared) - 1, one_longer)]
    # A question shared by its answers: short, but shared by enough of them to save MIN_SAVED_TOKENS.
    question = tuple(range(500, 500 + MIN_SHARED_STEP))
    answers = sorted(question + (i, i) for i in range(1 + MIN_SAVED_TOKENS // MIN_SHARED_STEP))
    assert prefix_groups(answers, 0) == [(MIN_SHARED_STEP, answers)]
    assert len(prefix_groups(answers[:2], 0)) == 2  # two answers save only MIN_SHARED_STEP tokens


def test_batches_respect_count_and_position_budgets():
    inputs = [tuple(range(n)) for n in (50, 40, 30, 20, 10)]
    assert [len(b) for b in batches(inputs, 0, 2, 10_000)] == [2, 2, 1]
    assert [len(b) for b in batches(inputs, 0, None, 100)] == [2, 3]  # 50 x 2 fits, 50 x 3 not; 30 x 3 fits
    assert [len(b) for b in batches(inputs, 0, None, 10)] == [1, 1, 1, 1, 1]  # too long alone: still runs
    assert [len(b) for b in batches(inputs, 5, None, 90)] == [2, 3]  # positions counted after the prefix: 45 x 2


def test_auto_splits_a_batch_that_runs_out_of_memory(smollm2, monkeypatch):
    """The auto policy meets an allocation failure (as a CPU allocator or CUDA reports it) on every batch of more
    than two inputs: it splits them until they fit, finishes, and gives the same numbers."""
    requests = [r for r in few_shot_requests() if r.continuation.startswith(" The")]
    smollm2.plain_paths = True
    expected = smollm2.loglikelihood(requests, batch_size=8)
    smollm2.plain_paths = False
    forward, rows_seen = smollm2.model.forward, []

    def failing_forward(input_ids, *args, **kwargs):
        rows_seen.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(smollm2.model, "forward", failing_forward)
    got = smollm2.loglikelihood(requests, batch_size=None)
    assert max(abs(e.logprob - g.logprob) for e, g in zip(expected, got)) < TOLERANCE
    assert max(rows_seen) > 2 and rows_seen[-1] <= 2  # it tried bigger batches, then ran what fitted
    with pytest.raises(RuntimeError, match="can't allocate"):  # a fixed batch size does not hide the error
        smollm2.loglikelihood(requests, batch_size=8)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("heads,kv_heads,scale", [(6, 2, None), (4, 4, 0.3)])
def test_shared_prefix_attention_equals_attention_over_the_whole(heads, kv_heads, scale, packed, monkeypatch):
    """Grouped-query (LLaMA) and plain multi-head with its own scale (GPT-2), against SDPA over the prefix's keys
    copied to every row, with a causal mask over the new positions; with MKL's products and with the prefix packed
    for oneDNN (SharedPrefixCache.packed)."""
    import torch
    import torch.nn.functional as F

    from harness.models.attention import KVCache, SharedPrefixCache, shared_prefix_attention

    generator = torch.Generator().manual_seed(0)
    batch, seq, prefix, dim = 3, 5, 7, 8
    q = torch.randn(batch, heads, seq, dim, generator=generator)
    k, v = (torch.randn(batch, kv_heads, seq, dim, generator=generator) for _ in range(2))
    k_prefix, v_prefix = (torch.randn(1, kv_heads, prefix, dim, generator=generator) for _ in range(2))
    whole_k, whole_v = (torch.cat([p.expand(batch, -1, -1, -1), n], 2).repeat_interleave(heads // kv_heads, 1)
                        for p, n in ((k_prefix, k), (v_prefix, v)))
    mask = torch.ones(seq, prefix + seq, dtype=torch.bool).tril(prefix)
    expected = F.scaled_dot_product_attention(q, whole_k, whole_v, attn_mask=mask, scale=scale)
    monkeypatch.setenv("HARNESS_PACKED_LINEAR", "1" if packed else "0")
    prefix_cache = KVCache(1)
    prefix_cache.keys, prefix_cache.values = [k_prefix], [v_prefix]
    packed_prefix = SharedPrefixCache(prefix_cache).packed(0)
    assert (packed_prefix is not None) == packed
    got = shared_prefix_attention(q, k, v, k_prefix, v_prefix, scale, packed=packed_prefix)
    assert (got - expected).abs().max() < 1e-5
