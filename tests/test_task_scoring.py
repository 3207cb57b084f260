"""The scorers tasks share (tasks/scoring.py), on hand-worked cases: lm-eval's tie rule, acc_norm, its regex
filter and its exact_match options."""

import numpy as np
import pytest

from harness.engine.requests import LoglikelihoodResult
from tasks.scoring import argmax_choice, exact_match, regex_extract, relative_likelihoods


def results(*logprobs):
    return [LoglikelihoodResult(lp, False) for lp in logprobs]


def test_argmax_choice_takes_the_first_of_tied_choices_as_numpy_does():
    assert argmax_choice(results(-2.0, -1.0, -1.0, -3.0)) == 1
    assert argmax_choice(results(-1.5, -1.5, -1.5, -1.5)) == 0  # a model with no preference answers the first
    assert argmax_choice(results(-np.inf, -np.inf)) == 0
    # lm-eval's acc_norm: loglikelihood per character of the choice (its length without the leading space).
    assert argmax_choice(results(-4.0, -6.0), lengths=[2, 6]) == 1
    assert argmax_choice(results(-4.0, -6.0), lengths=[4, 6]) == 0  # tied per character: the first again
    assert argmax_choice(results(-4.0, -6.0)) == 0


def test_relative_likelihoods_normalize_to_probabilities():
    probs = relative_likelihoods(results(np.log(0.2), np.log(0.6), np.log(0.2)))
    assert probs.max() == 1.0 and (probs / probs.sum()) == pytest.approx([0.2, 0.6, 0.2])
    assert relative_likelihoods(results(-2000.0, -2001.0)).sum() > 1.0  # no underflow for long choices


def test_regex_extract_and_exact_match_as_lm_eval():
    assert regex_extract(r"#### (\-?[0-9\.\,]+)", "x #### 1,000\n#### 7", 0) == "1,000"
    assert regex_extract(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", "7 apples, 12 pears", -1) == "12"
    assert regex_extract(r"(\d+)", "none") == "[invalid]"
    assert exact_match("Yes", "yes") == 0.0 and exact_match("Yes", "yes", ignore_case=True) == 1.0
    assert exact_match("$1,000", "1000", regexes_to_ignore=[",", r"\$"]) == 1.0
