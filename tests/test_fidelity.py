"""The real model against numbers lm-eval 0.4.13 produced on the same converted weights and data.

Reference values: per-document loglikelihoods from lm-eval's `--log_samples` output of its wikitext task
(docs/fidelity.md has the command). Document 3 has 8,872 tokens, so it spans two windows of SmolLM2's 8,192,
and the second, shorter window is conditioned on the earlier tokens that fill the window: the part of
lm-eval's rolling-window definition that a short document never reaches.
"""

import pytest

import tasks

pytestmark = pytest.mark.slow  # 8,872-token documents through the real model
LM_EVAL_WIKITEXT_LOGLIKELIHOOD = {0: -3315.25, 3: -23113.901611328125}


def test_wikitext_document_loglikelihoods_match_lm_eval(smollm2):
    task = tasks.build("wikitext")
    docs = task.docs()
    requests = [task.requests(docs[index])[0] for index in LM_EVAL_WIKITEXT_LOGLIKELIHOOD]
    ours = smollm2.loglikelihood_rolling(requests, batch_size=1)
    for request, expected, got in zip(requests, LM_EVAL_WIKITEXT_LOGLIKELIHOOD.values(), ours):
        tokens = len(smollm2.encode(request.text))
        # Both are fp32 sums of per-token log-probabilities from two implementations that differ in summation
        # order; per token they agree to 2e-5 nats (MMLU's largest difference was 1.6e-5), so the document
        # totals may differ by at most 2e-5 per token (0.18 nats for document 3; observed 0.07).
        assert got == pytest.approx(expected, abs=2e-5 * tokens)
