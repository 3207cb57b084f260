"""Generation in the reference adapter: batched, KV-cached, greedy or sampled, on the real SmolLM2."""

import torch

from harness.engine.requests import GenerateRequest
from harness.models.decoding import sample_token

PROMPTS = [
    "The capital of France is",
    "Q: What is 12 + 30?\nA:",
    "Write a haiku about autumn leaves falling on a quiet pond:",
    "def fibonacci(n):",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a kingdom far away, there lived a",
    "1, 2, 3, 4,",
    "The quick brown fox",
]


def test_greedy_batch_of_8_equals_each_prompt_alone_token_for_token(smollm2):
    # One request stops early at a stop string while the others go on: that ends its sequence, not the batch.
    requests = [GenerateRequest(p, max_tokens=20) for p in PROMPTS]
    requests[6] = GenerateRequest(PROMPTS[6], stop=(" 6",), max_tokens=20)
    alone = [smollm2.generate([r], batch_size=1)[0] for r in requests]
    together = smollm2.generate(requests, batch_size=8)
    assert [g.tokens for g in together] == [g.tokens for g in alone]
    assert [g.text for g in together] == [g.text for g in alone]
    assert (alone[6].text, alone[6].finish) == (" 5,", "stop")
    assert {g.finish for g in alone[:6]} <= {"eos", "length"} and max(len(g.tokens) for g in alone) == 20


def test_sampling_is_seeded_and_does_not_depend_on_the_batch(smollm2):
    requests = [GenerateRequest(p, max_tokens=12, temperature=0.8, top_p=0.9) for p in PROMPTS[:4]]
    requests.append(requests[0])  # an identical request draws its own, different, sample
    one = smollm2.generate_until(requests, batch_size=1, seed=7)
    five = smollm2.generate_until(requests, batch_size=5, seed=7)
    assert one == five
    assert one[0] != one[4]
    assert smollm2.generate_until(requests, batch_size=5, seed=8) != one


def test_a_vanishing_nucleus_is_greedy(smollm2):
    greedy = smollm2.generate_until([GenerateRequest(p, max_tokens=12) for p in PROMPTS[:3]], batch_size=3)
    nucleus = smollm2.generate_until(
        [GenerateRequest(p, max_tokens=12, temperature=1.0, top_p=1e-6) for p in PROMPTS[:3]], batch_size=3)
    assert nucleus == greedy


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    generator = torch.Generator().manual_seed(0)
    # Mass before each token in order: 0, 0.5, 0.8, 0.95. With p = 0.7 the nucleus is the first two tokens.
    drawn = {int(sample_token(logits, 1.0, 0.7, generator)) for _ in range(400)}
    assert drawn == {0, 1}
    drawn = {int(sample_token(logits, 1.0, 1.0, generator)) for _ in range(400)}
    assert drawn == {0, 1, 2, 3}


def test_max_tokens_bounds_each_request(smollm2):
    short, longer = smollm2.generate([GenerateRequest("1, 2, 3, 4,", max_tokens=1),
                                      GenerateRequest("1, 2, 3, 4,", max_tokens=5)], batch_size=2)
    assert (len(short.tokens), short.finish) == (1, "length") and len(longer.tokens) == 5
    assert longer.tokens[:1] == short.tokens
