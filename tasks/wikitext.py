"""WikiText-2 perplexity (Merity et al., 2016), document by document, as lm-evaluation-harness 0.4.x defines it.

Documents are the articles of `wiki.test.raw`: a new one starts at each top-level heading line ` = Title = `
(lines ` = = Section = = ` do not start one), and a document is its lines joined by "\\n", the way the
`EleutherAI/wikitext_document_level` dataset builds its `page` field. The model scores the page after lm-eval's
wikitext detokenizer (rolling loglikelihood, every token predicted once), while words and bytes are counted on
the original page:

    word_perplexity = exp(-sum(ll) / sum(words)),  words = len(re.split(r"\\s+", page))
    byte_perplexity = exp(-sum(ll) / sum(bytes)),  bytes = len(page.encode("utf-8"))
    bits_per_byte   = -sum(ll) / sum(bytes) / ln 2
Data: tasks/data/wikitext2/wiki.test.raw (sha256-verified), see its PROVENANCE.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.engine.requests import RollingLoglikelihoodRequest
from harness.engine.task import Doc, Metric, Task
from harness.errors import UserError
from tasks.base import DATA_DIR, require_file

LIST_ORDER = 5  # after TruthfulQA in `harness list tasks`

# lm-eval 0.4.x's wikitext detokenizer (tasks/wikitext/preprocess_wikitext.py), as data: applied in this order,
# ("str", a, b) replaces text a with b, ("re", pattern, replacement) substitutes a regular expression.
DETOKENIZER_RULES = [
    ("str", "s '", "s'"),
    ("re", r"/' [0-9]/", r"/'[0-9]/"),
    ("str", " @-@ ", "-"),
    ("str", " @,@ ", ","),
    ("str", " @.@ ", "."),
    ("str", " : ", ": "),
    ("str", " ; ", "; "),
    ("str", " . ", ". "),
    ("str", " ! ", "! "),
    ("str", " ? ", "? "),
    ("str", " , ", ", "),
    ("re", r"\(\s*([^\)]*?)\s*\)", r"(\1)"),
    ("re", r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
    ("re", r"{\s*([^}]*?)\s*}", r"{\1}"),
    ("re", r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
    ("re", r"'\s*([^']*?)\s*'", r"'\1'"),
    ("str", "= = = =", "===="),
    ("str", "= = =", "==="),
    ("str", "= =", "=="),
    ("str", " \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
    ("str", " \n", "\n"),
    ("str", "\n ", "\n"),
    ("str", " N ", " 1 "),
    ("str", " 's", "'s"),
]


def detokenize(page: str) -> str:
    for kind, old, new in DETOKENIZER_RULES:
        page = page.replace(old, new) if kind == "str" else re.sub(old, new, page)
    return page


def is_article_title(line: str) -> bool:
    # " = Title = " starts an article; " = = Section = = " does not (after collapsing "= =" it reads "== ... ==").
    collapsed = line.replace("= = =", "===").replace("= =", "==").strip()
    return collapsed.startswith("= ") and collapsed.endswith(" =")


def split_articles(raw: str) -> list[str]:
    pages, lines = [], []
    for line in raw.split("\n"):
        if is_article_title(line):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


@dataclass
class WikiText(Task):
    path: Path | None = None  # default: the shipped copy
    metrics: list[Metric] = field(default_factory=lambda: [
        Metric("word_perplexity", "weighted_perplexity", higher_is_better=False),
        Metric("byte_perplexity", "weighted_perplexity", higher_is_better=False),
        Metric("bits_per_byte", "bits_per_byte", higher_is_better=False),
    ])

    def __post_init__(self):
        self.version = "2.0"  # lm-eval's wikitext task version
        self.path = self.path or DATA_DIR / "wikitext2" / "wiki.test.raw"
        if self.num_fewshot:
            raise UserError("wikitext is a perplexity task and takes no few-shot examples (--num-fewshot 0)")

    def docs(self) -> list[Doc]:
        try:
            raw = require_file(self.path).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{self.path}: not UTF-8 at byte {error.start}") from None
        return [Doc(str(i), {"page": page}) for i, page in enumerate(split_articles(raw))]

    def requests(self, doc: Doc) -> list[RollingLoglikelihoodRequest]:
        return [RollingLoglikelihoodRequest(detokenize(doc.fields["page"]))]

    def score(self, doc: Doc, responses) -> dict:
        (loglikelihood,) = responses
        page = doc.fields["page"]
        words = len(re.split(r"\s+", page))
        size = len(page.encode("utf-8"))
        return {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, size),
                "bits_per_byte": (loglikelihood, size)}

    def target(self, doc: Doc) -> str:
        return doc.fields["page"][:80]

    def data_files(self) -> list[Path]:
        return [self.path]


def register(tasks: dict, groups: dict) -> None:
    tasks["wikitext"] = lambda options: WikiText(name="wikitext", num_fewshot=options.fewshot(0))
