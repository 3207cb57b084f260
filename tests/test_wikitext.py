"""WikiText: documents, detokenizer, and the three perplexity metrics on hand-made numbers."""

import math

import pytest

from harness import stats
from harness.engine.task import Doc
from tasks.wikitext import WikiText, detokenize, split_articles


def test_the_test_set_has_62_articles():
    docs = WikiText(name="wikitext").docs()
    assert len(docs) == 62  # the document count of EleutherAI/wikitext_document_level, wikitext-2-raw-v1 test
    assert docs[0].fields["page"].startswith(" = Robert Boulter = \n")
    assert all(d.fields["page"].lstrip().startswith("= ") for d in docs)
    # every line of the file is in exactly one document, but the blank line before the first title
    raw = WikiText(name="wikitext").path.read_text(encoding="utf-8")
    assert " \n" + "\n".join(d.fields["page"] for d in docs) == raw


def test_articles_split_at_titles_not_sections():
    raw = " = A = \n \n text \n = = Section = = \n more \n = B = \n b text \n"
    assert split_articles(raw) == [" = A = \n \n text \n = = Section = = \n more ", " = B = \n b text \n"]


def test_detokenizer_examples():
    assert detokenize("a @-@ b @,@ c @.@ d") == "a-b,c.d"
    assert detokenize("word , next . end") == "word, next. end"
    assert detokenize(" = = Section = = \n ( in brackets ) \" quoted \"") == " == Section ==\n(in brackets) \"quoted\""
    assert detokenize("Eddie 's car") == "Eddie's car"


def test_metrics_count_words_and_bytes_on_the_original_page():
    task = WikiText(name="wikitext")
    page = " = T = \n caf\u00e9 @-@ bar \n"
    doc = Doc("0", {"page": page})
    (request,) = task.requests(doc)
    assert request.text == detokenize(page)
    scores = task.score(doc, [-10.0])
    words = len(" = T = \n caf\u00e9 @-@ bar \n".split()) + 2  # re.split on whitespace keeps the empty ends
    assert scores["word_perplexity"] == (-10.0, words)
    assert scores["byte_perplexity"] == (-10.0, len(page.encode("utf-8")))


def test_perplexity_aggregations():
    pairs = [(-10.0, 4), (-6.0, 4)]
    assert stats.weighted_perplexity(pairs) == pytest.approx(math.exp(16 / 8))
    assert stats.bits_per_byte(pairs) == pytest.approx(16 / 8 / math.log(2))
    value, stderr, _ = stats.aggregate("mean", [1.0, 0.0, 1.0, 1.0])
    assert value == 0.75 and stderr == pytest.approx(0.5 / 2)
    value, bootstrap, (low, high) = stats.aggregate("weighted_perplexity", [(-1.0, 1), (-3.0, 1), (-2.0, 1)], seed=0)
    assert 0 < bootstrap < math.exp(3) - math.exp(1)
    assert math.exp(1) <= low <= value <= high <= math.exp(3)  # percentiles of resampled perplexities
