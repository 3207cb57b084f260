"""The perturbations `--perturb` names, parsed from their specs, and the text changes they make.

  choices=permute   each question asked under every rotation of its choices (n orders for n choices; order 0 is the
                    task's own), so that every choice, the gold one included, takes every position once
  typos=RATE        each letter replaced, with probability RATE, by a neighbouring key of a QWERTY keyboard (HELM's
                    typo perturbation, after NL-Augmenter's "butter fingers": Liang et al. 2022, "Holistic
                    Evaluation of Language Models", arXiv 2211.09110), case kept; 0 < RATE <= 1
  case=lower|upper  the text lower- or upper-cased (HELM's lowercase perturbation, and its upper-case mirror)
  whitespace=MAX    every run of spaces becomes 1 to MAX spaces (HELM's space perturbation); 2 <= MAX <= 10
  format=variants   the prompt written in each of the task's layouts (FormatSpread, Sclar et al. 2023)

Text changes touch only the fields a task names as its input text (Task.perturbable), never a gold answer, a
choice or its label, or a few-shot example. Each draws from its own random stream, seeded by the run's --seed, the
task, the document, the perturbation and the field, so that a perturbed question is the same in every run with
that seed and does not depend on which other documents or tasks ran.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from harness.errors import UserError

USAGE = ("choices=permute, typos=RATE (0 < RATE <= 1), case=lower|upper, whitespace=MAX (2 to 10 spaces), "
         "format=variants")
MAX_SPACES = 10
FIXED_VALUES = {"choices": "permute", "format": "variants", "case": "lower or upper"}

# The keys next to each letter on a QWERTY keyboard, as HELM's typo perturbation lists them (its
# augmentations/typos_perturbation.py: distance-1 keys only, never the letter itself).
NEIGHBOURS = {
    "q": "was", "w": "qesad", "e": "wsdfr", "r": "edfgt", "t": "rfghy", "y": "tghju", "u": "yhjki", "i": "ujklo",
    "o": "iklp", "p": "ol", "a": "qwsz", "s": "weadzx", "d": "erfcxs", "f": "rtgvcd", "g": "tyhbvf", "h": "yujnbg",
    "j": "uikmnh", "k": "iolmj", "l": "opk", "z": "asx", "x": "sdcz", "c": "dfvx", "v": "fgbc", "b": "ghnv",
    "n": "hjmb", "m": "jkn",
}


@dataclass(frozen=True)
class Perturbation:
    kind: str  # choices, typos, case, whitespace or format
    value: str  # checked, and a rate written as Python writes the number (".05" is "0.05")

    @property
    def name(self) -> str:
        return f"{self.kind}={self.value}"

    @property
    def changes_text(self) -> bool:
        return self.kind in ("typos", "case", "whitespace")


def parse_perturbation(spec: str) -> Perturbation:
    """One KIND=VALUE spec, checked; anything else is refused naming what applies."""
    kind, equals, value = (part.strip() for part in spec.partition("="))
    if not equals or not value:
        raise UserError(f"--perturb: expected KIND=VALUE, got {spec!r}; choose from {USAGE}")
    if kind == "choices" and value == "permute" or kind == "format" and value == "variants":
        return Perturbation(kind, value)
    if kind == "case" and value in ("lower", "upper"):
        return Perturbation(kind, value)
    if kind == "typos":
        try:
            rate = float(value)
        except ValueError:
            rate = float("nan")
        if not 0 < rate <= 1:
            raise UserError(f"--perturb typos={value}: the rate is the chance that a letter is mistyped, a number "
                            "above 0 and at most 1 (e.g. typos=0.05)")
        return Perturbation(kind, repr(rate))
    if kind == "whitespace":
        if not value.isdigit() or not 2 <= int(value) <= MAX_SPACES:
            raise UserError(f"--perturb whitespace={value}: the most spaces a space may become, an integer from 2 "
                            f"to {MAX_SPACES} (e.g. whitespace=3)")
        return Perturbation(kind, str(int(value)))
    if kind in FIXED_VALUES:
        raise UserError(f"--perturb {spec}: {kind} takes {FIXED_VALUES[kind]}")
    raise UserError(f"--perturb: unknown perturbation {kind!r}; choose from {USAGE}")


def parse_perturbations(specs: tuple[str, ...]) -> list[Perturbation]:
    """The run's perturbations, each once, in the order given: each is its own variant of every task (typos=0.02
    and typos=0.1 are two)."""
    found: dict[str, Perturbation] = {}
    for spec in specs:
        perturbation = parse_perturbation(spec)
        found.setdefault(perturbation.name, perturbation)
    return list(found.values())


def split_specs(text: str) -> tuple[str, ...]:
    """--perturb's comma-separated list as specs."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def stream(seed: int, *names: str) -> random.Random:
    """A random stream of its own for one (task, document, perturbation, field)."""
    digest = hashlib.sha256("\x1f".join([str(seed), *names]).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def mistype(text: str, rate: float, rng: random.Random) -> str:
    """Each letter with a keyboard neighbour replaced by one of them with probability `rate`, its case kept."""
    out = []
    for character in text:
        lower = character.lower()
        if lower in NEIGHBOURS and rng.random() < rate:
            replacement = rng.choice(NEIGHBOURS[lower])
            character = replacement.upper() if character != lower else replacement
        out.append(character)
    return "".join(out)


def respace(text: str, max_spaces: int, rng: random.Random) -> str:
    return re.sub(r" +", lambda _: " " * rng.randint(1, max_spaces), text)


def perturb_text(perturbation: Perturbation, text: str, rng: random.Random) -> str:
    if perturbation.kind == "typos":
        return mistype(text, float(perturbation.value), rng)
    if perturbation.kind == "whitespace":
        return respace(text, int(perturbation.value), rng)
    if perturbation.kind == "case":
        return text.lower() if perturbation.value == "lower" else text.upper()
    raise ValueError(f"{perturbation.name} does not change text")
