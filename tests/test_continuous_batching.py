"""Continuous batching (harness/models/generation.py) against the plain fixed-batch path: the same texts, tokens and
finish reasons whatever the batch size, greedy and sampled, and the profiler still counts every token."""

import pytest

from harness.systems.profiler import Profiler
from harness.engine.requests import GenerateRequest

PROMPTS = ["The capital of France is", "Once upon a time, in a land far away,", "def fibonacci(n):",
           "Question: What is 12 plus 7?\nAnswer:", "A list of fruits: apple, banana,",
           "The following is a short story about a robot who learns to paint. It begins in a small workshop",
           "1, 2, 3, 4,", "Translate to French: good morning ->", "The three primary colours are",
           "In 1969, the first humans"]


def requests(temperature: float = 0.0) -> list[GenerateRequest]:
    """Different lengths, max_tokens (so sequences end at different steps) and stop strings; one duplicate."""
    made = [GenerateRequest(prompt, stop=(".", "\n\n") if i % 3 == 0 else ("\n",), max_tokens=4 + 3 * (i % 5),
                            temperature=temperature, top_p=0.95)
            for i, prompt in enumerate(PROMPTS)]
    return made + [made[1]]


def plain(model, batch, **kwargs):
    model.plain_paths = True
    try:
        return model.generate(batch, **kwargs)
    finally:
        model.plain_paths = False


@pytest.mark.slow  # 10 generations at four batch sizes, twice, on the real model (about 18 s)
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_same_generations_as_the_plain_path_at_every_batch_size(smollm2, temperature):
    batch = requests(temperature)
    expected = plain(smollm2, batch, batch_size=4, seed=3)
    assert len({g.finish for g in expected}) >= 2  # some end on a stop string or EOS, others on max_tokens
    for batch_size in (1, 3, 16):
        got = smollm2.generate(batch, batch_size=batch_size, seed=3)
        assert [(g.text, g.tokens, g.finish) for g in got] == [(g.text, g.tokens, g.finish) for g in expected]


def test_a_stop_string_spanning_tokens_is_found_and_cut(smollm2):
    """"6, 7" takes several tokens to appear: the incremental search still finds it and cuts before it."""
    counting = GenerateRequest("1, 2, 3, 4,", stop=("6, 7",), max_tokens=20)
    [generation] = smollm2.generate([counting, GenerateRequest("Hello", max_tokens=2)], batch_size=2)[:1]
    assert (generation.text, generation.finish) == (" 5, ", "stop")
    assert "6, 7" in smollm2.tokenizer.decode(generation.tokens)


def test_the_profiler_counts_every_sequence(smollm2):
    batch = requests()
    profiler = Profiler(smollm2.device)
    profiler.start()
    with smollm2.timed_by(profiler), smollm2.working_on("gen"):
        generations = smollm2.generate(batch, batch_size=3)
    profiler.stop()
    summary = profiler.summary()["tasks"]["gen"]
    assert summary["generated_tokens"] == sum(len(g.tokens) for g in generations)
    assert summary["ttft_s"]["n"] == sum(1 for g in generations if g.tokens)
    assert summary["prefill"]["tokens"] == sum(len(smollm2.encode(r.context)) for r in batch)
