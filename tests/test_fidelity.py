"""The real model against numbers lm-eval 0.4.13 produced on the same converted weights and data.

Reference values: per-document loglikelihoods from lm-eval's `--log_samples` output of its wikitext task
(docs/fidelity.md has the commands). Document 0 (1,093 words) fits SmolLM2's window of 8,192 tokens; read in
windows of 512 (lm-eval's `max_length=512`, our `--max-length 512`) it spans several, and its last, shorter window
is conditioned on the earlier tokens that fill the window: the part of lm-eval's rolling-window definition that a
document inside one window never reaches. A window of 512 tests it as well as one of 8,192 (where only documents
over 8,192 tokens reach it, at a minute of this machine's time each); the 62 documents at 8,192 are compared in
docs/fidelity.md.
"""

from dataclasses import replace

import pytest
import torch

import tasks

pytestmark = pytest.mark.slow  # documents of a thousand words through the real model
# {window: lm-eval's loglikelihood of WikiText document 0 read in windows of that many tokens}
LM_EVAL_WIKITEXT_DOCUMENT_0 = {8192: -3315.25, 512: -4374.6981201171875}


def test_wikitext_document_loglikelihoods_match_lm_eval(smollm2, monkeypatch):
    request = tasks.build("wikitext").requests(tasks.build("wikitext").docs()[0])[0]
    tokens = len(smollm2.encode(request.text))
    for window, expected in LM_EVAL_WIKITEXT_DOCUMENT_0.items():
        monkeypatch.setattr(smollm2, "max_length", window)  # what --max-length does (shorten_window)
        [got] = smollm2.loglikelihood_rolling([request], batch_size=1)
        # Both are fp32 sums of per-token log-probabilities from two implementations that differ in summation
        # order; per token they agree to 2e-5 nats (MMLU's largest difference was 1.6e-5), so the document
        # totals may differ by at most 2e-5 per token (0.03 nats here). Reading in windows of 512 instead of one
        # costs this document over a thousand nats, so a window conditioned on the wrong tokens cannot pass.
        assert got == pytest.approx(expected, abs=2e-5 * tokens), window


# Gemma 3 270M, whose tokenizer adds BOS (docs/fidelity.md, "Gemma 3 270M"): lm-eval 0.4.13's loglikelihoods of
# the four answers of document 0, from its --log_samples output on the same converted folder.
LM_EVAL_GEMMA_MMLU = {
    ("mmlu_anatomy", 0): [-2.0753278732299805, -1.5985525846481323, -1.8642100095748901, -1.0390413999557495],
    ("mmlu_abstract_algebra", 5): [-1.4178407192230225, -1.1017014980316162, -1.5056359767913818,
                                   -1.68314528465271],
}


def test_gemma_mmlu_answers_match_lm_eval():
    from harness.engine.task import TaskOptions
    from harness.models.registry import load_model
    from tests.fp32 import continuation_logit_sizes, logprob_tolerance

    gemma = load_model("gemma3-270m")
    for (name, shots), expected in LM_EVAL_GEMMA_MMLU.items():
        task = tasks.build(name, TaskOptions(num_fewshot=shots))
        requests = [replace(request, context=request.context.text()) for request in task.requests(task.docs()[0])]
        got = [result.logprob for result in gemma.loglikelihood(requests)]
        # One token each (" A" to " D"), scored after the BOS Gemma's tokenizer puts first: a BOS too many or too
        # few moves every answer by far more than an fp32 summation order can (tests/fp32.py).
        for value, reference, (tokens, size) in zip(got, expected, continuation_logit_sizes(gemma, requests)):
            assert value == pytest.approx(reference, abs=logprob_tolerance(tokens, size))


def test_gemma_wikitext_document_matches_lm_eval_with_its_bos_after_the_prefix():
    """lm-eval's loglikelihood of WikiText document 0 (1,093 words, one window of 4,096) for Gemma: the rolling
    window starts with the prefix BOS and the text keeps its own BOS, so the sum includes log p(BOS | BOS), -17.77
    nats for this model, far outside the tolerance: a BOS rule other than lm-eval's fails here."""
    from harness.models.lm_eval_tokens import rolling_windows
    from harness.models.registry import load_model
    from tests.fp32 import logprob_tolerance

    gemma = load_model("gemma3-270m", max_length=4096)
    task = tasks.build("wikitext")
    (request,) = task.requests(task.docs()[0])
    (got,) = gemma.loglikelihood_rolling([request], batch_size=1)
    windows = rolling_windows(gemma.encode(request.text), gemma.prefix_token_id, gemma.max_length)
    with torch.inference_mode():
        size = max(float(gemma._forward(torch.tensor([context + predicted[:-1]]))[0].abs().max())
                   for context, predicted in windows)
    tokens = sum(len(predicted) for _, predicted in windows)
    assert got == pytest.approx(-2916.418212890625, abs=logprob_tolerance(tokens, size))
