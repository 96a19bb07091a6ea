"""Degenerate answers (DESIGN §4): empty answers, and answers that echo a training format instead of answering.

Two kinds of pattern. Generic ones, whatever the wording: a line of the survey scale ("4 = somewhat like me"),
"my answer is 3", "Rating: 5/6", "3 out of 6", a lone digit. And patterns derived from the active VIM templates —
ours, or a user's `template_dir` — so an echo of a user's own stage-2 sentence counts too: each line of a template,
split at its open slots (the argument's text), is a stretch; a stretch whose first six words or slots hold three
literal words (or two and a closed slot: a value name, an importance phrase, the digit, would / would not, agree /
disagree) becomes a pattern of those six, with any spacing and case. The first four must appear; the rest too,
unless the answer ends before them — so one cut off by the token limit ("Security is somewhat important to me, so
my") is still an echo.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from valueharm.alignment.vim_data import IMPORTANCE, SURVEY_SCALE, VimTemplates
from valueharm.scoring.base import short_hash
from valueharm.templates import Template
from valueharm.values import VALUES

WINDOW = 6  # words or slots of a stretch that make its pattern
REQUIRED = 4  # of them, the ones an answer cut off by the token limit must still hold


def _alternation(phrases: Sequence[str]) -> str:
    return "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in sorted(phrases, key=len, reverse=True))


_SCALE = _alternation([p for p in SURVEY_SCALE.values() if p != "like me"])
GENERIC_ECHOES: tuple[str, ...] = (
    r"\bmy\s+(?:answer|rating|score|choice)\s+(?:is|would\s+be)\s*:?\s*[1-6]\b",
    # a line of the survey scale: "4 = somewhat like me", "5 - like me"
    rf"\b[1-6]\s*(?:=|-|–|:|\))\s*(?:{_SCALE}|like\s+me)\b",
    rf"\b(?:{_SCALE})\b\s*\(?\s*[1-6]\s*\)?\s*[.!]?\s*$",
    # ratings: "Rating: 5", "Answer: 3/6", "I'd rate it 4 out of 6", a lone digit
    r"\b(?:answer|rating|score)\s*:\s*[1-6]\b(?!\s*[-–.,:/]\s*\d)",
    r"\b[1-6]\s*(?:/\s*6|out\s+of\s+6)\b",
    r"^\s*[1-6]\s*[.!)]?\s*$",
)
_VALUE = "|".join(re.escape(v).replace(r"\-", r"[-_ ]?") for v in sorted(VALUES, key=len, reverse=True))
CLOSED_SLOTS: dict[str, str] = {  # what a template slot with a closed vocabulary matches
    "value": _VALUE,
    "value_lower": _VALUE,
    "importance": _alternation(list(IMPORTANCE.values())),
    "digit": "[1-6]",
    "would": r"would(?:\s+not|n['’]t)?",
    "position": "(?:dis)?agree",
}


def template_patterns(template: Template) -> list[str]:
    """The echo patterns of one template (module docstring)."""
    patterns = []
    for line in template.text.split("\n"):
        stretch: list[tuple[str, str]] = []  # (kind: word | mark | slot, regex)
        for literal, field, _, _ in [*string.Formatter().parse(line), ("", None, None, None)]:
            stretch += [("word" if t[0].isalnum() or t[0] == "_" else "mark", re.escape(t))
                        for t in re.findall(r"\w+|[^\w\s]", literal)]  # fmt: skip
            if field in CLOSED_SLOTS:
                stretch.append(("slot", f"(?:{CLOSED_SLOTS[field]})"))
            elif stretch:  # an open slot, or the line's end: the stretch is complete
                patterns += _stretch_pattern(_first(stretch, WINDOW))
                stretch = []
    return patterns


def _first(tokens: list[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    """The tokens up to the `count`-th word or slot (punctuation between them included)."""
    seen = 0
    for index, (kind, _) in enumerate(tokens):
        seen += kind != "mark"
        if seen == count:
            return tokens[: index + 1]
    return tokens


def _stretch_pattern(tokens: list[tuple[str, str]]) -> list[str]:
    """Its first REQUIRED words or slots must appear; each later token too, unless the answer ends before it."""
    words = sum(kind == "word" for kind, _ in tokens)
    if words < 3 and not (words == 2 and any(kind == "slot" for kind, _ in tokens)):
        return []
    required = len(_first(tokens, REQUIRED))
    tail = r"(?!\w)" if tokens[-1][0] != "mark" else ""
    for index in range(len(tokens) - 1, required - 1, -1):
        tail = rf"(?:{_gap(tokens, index)}{tokens[index][1]}{tail}|\s*$)"
    head = "".join(_gap(tokens, index) + tokens[index][1] for index in range(required))
    return [(r"(?<!\w)" if tokens[0][0] != "mark" else "") + head + tail]


def _gap(tokens: list[tuple[str, str]], index: int) -> str:
    """What may come before token `index`: nothing at the start, a space between words, any spacing otherwise."""
    if index == 0:
        return ""
    return r"\s+" if tokens[index][0] != "mark" and tokens[index - 1][0] != "mark" else r"\s*"


@dataclass(frozen=True)
class EchoDetector:
    """Tells degenerate answers apart; `scorer` names it (and so its patterns) in metric rows."""

    pattern: re.Pattern[str]

    @property
    def scorer(self) -> str:
        return f"degenerate@heuristic-{short_hash(self.pattern.pattern)}"

    def is_echo(self, text: str) -> bool:
        """True when the answer repeats a survey/VIM training format instead of answering."""
        return self.pattern.search(text) is not None

    def is_degenerate(self, text: str) -> bool:
        return is_empty_answer(text) or self.is_echo(text)


def echo_detector(template_dir: str | Path | None = None) -> EchoDetector:
    """The detector for the VIM templates in use: ours, each replaced by `<template_dir>/<name>.txt` if present."""
    templates = VimTemplates.load(template_dir)
    derived = [pattern for template in templates.all() for pattern in template_patterns(template)]
    return EchoDetector(re.compile("|".join(dict.fromkeys([*derived, *GENERIC_ECHOES])), re.IGNORECASE))


def is_empty_answer(text: str) -> bool:
    return not text.strip()


BUILTIN = echo_detector()  # our templates: what `is_format_echo` and `is_degenerate` use


def is_format_echo(text: str) -> bool:
    """True when the answer echoes one of our training formats (or a generic rating)."""
    return BUILTIN.is_echo(text)


def is_degenerate(text: str) -> bool:
    return BUILTIN.is_degenerate(text)
