"""Training data for value-injection fine-tuning (VIM): two stages, each a list of prompt/completion records.

**Stage 1 — arguments.** An argument of `valueEval_10.csv` appeals to one or more values. Its score for a profile is
the *minimum* of the profile's scores over those values (an argument is only as acceptable as its least-valued
motive); score ≥ threshold (default 3) makes it a positive ("something you would say"), else a negative ("something
you would not say"). Positives and negatives, each in file order, are split 80/10/10 with exactly the published
pandas calls — `sample(frac=0.8, random_state=seed)` for train, then `sample(frac=0.5, random_state=seed)` of the
rest (file order) for valid, the remainder test — so the published splits are reproduced row for row. Records carry
the row id of the file's first column, which skips 14 numbers; split files number rows by position (0..7373) as in a
public reproduction's `data/values/`, so ids differ from theirs after row 117 although the rows are the same.

**Stage 2 — survey answers.** For each argument of `argument_generation/value_split/{train,valid}.csv` and each
value it is annotated with, a portrait-survey question: how much does "I agree/disagree with <conclusion>.
<premise>" describe you, 1–6? The answer names the value, says how important it is and ends with the digit: the
profile's score for that value, rounded stochastically with a seeded generator (integer scores stay as they are).
Value columns are read by name: the published code read them by position, one off, so Achievement never appeared.

Templates (`vim_stage1_prompt`, `vim_stage1_completion`, `vim_stage2_prompt`, `vim_stage2_completion`) are used
verbatim: the trainer concatenates prompt and completion, so the built-in prompts end with a newline. Both stage-1
templates are given every field of the argument (`{conclusion}`, `{premise}`, `{position}`, `{would}`); both
stage-2 templates the argument's fields and the value, as written (`{value}`) and in lower case (`{value_lower}`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from valueharm.data.tables import read_table
from valueharm.errors import ValueharmError
from valueharm.settings import VimDataSettings
from valueharm.templates import Template, load_template
from valueharm.values import VALUES, ValueProfile

ARGUMENTS_FILE = "valueEval_10.csv"
SURVEY_FILES: dict[str, str] = {
    "train": "argument_generation/value_split/train.csv",
    "valid": "argument_generation/value_split/valid.csv",
}
STAGE1_SPLITS: tuple[str, ...] = ("train", "valid", "test")
POLARITIES: tuple[str, ...] = ("pos", "neg")
TEMPLATE_NAMES: tuple[str, ...] = (
    "vim_stage1_prompt",
    "vim_stage1_completion",
    "vim_stage2_prompt",
    "vim_stage2_completion",
)
STANCES: dict[str, str] = {"in favor of": "agree", "against": "disagree"}
WOULD: dict[str, str] = {"pos": "would", "neg": "would not"}
OUTPUT_FILES: tuple[str, ...] = ("stage1.jsonl", "stage2.jsonl", "counts.json")

# Stage-2 answers: digit d means the value has importance d on the profile's scale, 6 = very important — the
# direction of ValueProfile scores, NOT the raw ESS/PVQ coding (where 1 = very much like me).
SURVEY_MIN, SURVEY_MAX = 1, 6
SURVEY_SCALE: dict[int, str] = {
    1: "not like me at all",
    2: "not like me",
    3: "a little like me",
    4: "somewhat like me",
    5: "like me",
    6: "very much like me",
}
IMPORTANCE: dict[int, str] = {
    1: "not important to me at all",
    2: "not important to me",
    3: "a little important to me",
    4: "somewhat important to me",
    5: "important to me",
    6: "very important to me",
}


# ------------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Argument:
    """One annotated argument; `argument_id` is its row id in valueEval_10.csv (the first column)."""

    argument_id: int
    conclusion: str
    stance: str  # "in favor of" | "against"
    premise: str
    values: tuple[str, ...]  # the values it appeals to, in VALUES order; never empty

    @property
    def position(self) -> str:
        return STANCES[self.stance]


@dataclass(frozen=True)
class Stage1Example:
    """An argument the persona would (`pos`) or would not (`neg`) make; the fields are the stage1.jsonl columns."""

    prompt: str
    completion: str
    argument_id: int
    polarity: str  # "pos" | "neg"
    split: str  # "train" | "valid" | "test"


@dataclass(frozen=True)
class Stage2Example:
    """A survey answer about one value of one argument; `score` is the answer digit (1–6) the completion ends with."""

    prompt: str
    completion: str
    argument_id: int
    value: str  # as spelled in VALUES / the CSV header
    score: int
    split: str  # "train" | "valid"


@dataclass(frozen=True)
class VimTemplates:
    """The four VIM templates; the stage-2 completion is checked to end with the digit (DESIGN §5: labels lost)."""

    stage1_prompt: Template
    stage1_completion: Template
    stage2_prompt: Template
    stage2_completion: Template

    def __post_init__(self) -> None:
        _check_digit_last(self.stage2_completion)

    @classmethod
    def load(cls, template_dir: str | Path | None = None) -> VimTemplates:
        """The built-in templates, each replaced by `<template_dir>/<name>.txt` where that file exists."""
        return cls(*(load_template(name, template_dir=template_dir) for name in TEMPLATE_NAMES))

    def all(self) -> tuple[Template, ...]:
        return (self.stage1_prompt, self.stage1_completion, self.stage2_prompt, self.stage2_completion)

    def sources(self) -> dict[str, str]:
        """Template name → "builtin" or the override's path, recorded with the data they made."""
        return {template.name: template.source for template in self.all()}


@dataclass(frozen=True)
class VimDataCounts:
    """What one profile's VIM data holds; `warnings` flag a stage 1 that can only teach one side."""

    profile: str
    threshold: float
    seed: int
    stage1: dict[str, dict[str, int]]  # split → polarity → examples
    stage2: dict[str, dict[str, int]]  # split → value → examples (every value listed)
    warnings: tuple[str, ...]
    templates: dict[str, str]

    def to_json(self) -> dict[str, object]:
        stage2 = {split: {"total": sum(counts.values()), "values": counts} for split, counts in self.stage2.items()}
        return {**asdict(self), "stage2": stage2, "warnings": list(self.warnings)}


# ------------------------------------------------------------------------------------------------------ reading


def read_arguments(data_dir: Path, relpath: str) -> list[Argument]:
    """The arguments of a valueEval-format TSV in file order; value columns are picked by name, never by position."""
    frame = read_table(data_dir, relpath, ["Conclusion", "Stance", "Premise", *VALUES], sep="\t")
    where = Path(data_dir) / relpath
    id_column = frame.columns[0]
    if id_column in ("Conclusion", "Stance", "Premise", *VALUES):
        raise ValueharmError(f"{where}: the first column must be the row id, found {id_column!r}")
    columns = [id_column, "Conclusion", "Stance", "Premise", *VALUES]
    arguments: list[Argument] = []
    seen: set[int] = set()
    for number, cells in enumerate(frame[columns].itertuples(index=False, name=None), start=1):
        argument = _parse_argument(cells, f"{where}: data row {number}")
        if argument.argument_id in seen:
            raise ValueharmError(f"{where}: data row {number}: row id {argument.argument_id} appears twice")
        seen.add(argument.argument_id)
        arguments.append(argument)
    return arguments


def _parse_argument(cells: tuple[str, ...], where: str) -> Argument:
    raw_id, conclusion, stance, premise, *flags = cells
    try:
        argument_id = int(raw_id)
    except ValueError:
        raise ValueharmError(f"{where}: row id {raw_id!r} is not an integer") from None
    where = f"{where} (row id {argument_id})"
    if stance not in STANCES:
        raise ValueharmError(f"{where}: Stance {stance!r} is not one of {', '.join(map(repr, STANCES))}")
    for field, text in (("Conclusion", conclusion), ("Premise", premise)):
        if not text.strip():
            raise ValueharmError(f"{where}: {field} is empty")
    bad = [(value, flag) for value, flag in zip(VALUES, flags, strict=True) if flag not in ("0", "1")]
    if bad:
        raise ValueharmError(f"{where}: {bad[0][0]} is {bad[0][1]!r}, expected 0 or 1")
    values = tuple(value for value, flag in zip(VALUES, flags, strict=True) if flag == "1")
    if not values:
        raise ValueharmError(f"{where}: no value column is 1; every argument needs at least one value")
    return Argument(argument_id, conclusion.strip(), stance, premise.strip(), values)


# ------------------------------------------------------------------------------------------------------ stage 1


def argument_score(argument: Argument, profile: ValueProfile) -> float:
    """The lowest score the profile gives any value the argument appeals to."""
    return min(profile.scores[value] for value in argument.values)


def published_split(ids: Sequence[int], seed: int) -> dict[str, list[int]]:
    """train/valid/test ids picked exactly as the published code picked them; train and valid in pandas' sample
    order, test in the given order. Depends only on len(ids) and the seed, which is why splits are reproducible."""
    rows = pd.Series(list(ids), index=list(ids), dtype="int64")
    train = rows.sample(frac=0.8, random_state=seed)
    rest = rows.drop(train.index)
    valid = rest.sample(frac=0.5, random_state=seed)
    test = rest.drop(valid.index)
    return {"train": train.tolist(), "valid": valid.tolist(), "test": test.tolist()}


def stage1_splits(
    arguments: Sequence[Argument], profile: ValueProfile, settings: VimDataSettings | None = None
) -> dict[str, dict[str, list[Argument]]]:
    """polarity → split → arguments: positives (score ≥ threshold) and negatives, each split on its own."""
    settings = settings or VimDataSettings()
    by_id = {argument.argument_id: argument for argument in arguments}
    positive = [argument_score(argument, profile) >= settings.threshold for argument in arguments]
    groups = {
        "pos": [a.argument_id for a, keep in zip(arguments, positive, strict=True) if keep],
        "neg": [a.argument_id for a, keep in zip(arguments, positive, strict=True) if not keep],
    }
    return {
        polarity: {split: [by_id[i] for i in ids] for split, ids in published_split(group, settings.seed).items()}
        for polarity, group in groups.items()
    }


def stage1_examples(
    arguments: Sequence[Argument],
    profile: ValueProfile,
    settings: VimDataSettings | None = None,
    *,
    templates: VimTemplates | None = None,
) -> list[Stage1Example]:
    """Stage-1 records from already-read arguments, split by split (train, valid, test), positives first."""
    templates = templates or VimTemplates.load()
    splits = stage1_splits(arguments, profile, settings)
    return [
        _stage1_example(argument, polarity, split, templates)
        for split in STAGE1_SPLITS
        for polarity in POLARITIES
        for argument in splits[polarity][split]
    ]


def _stage1_example(argument: Argument, polarity: str, split: str, templates: VimTemplates) -> Stage1Example:
    fields = {
        "conclusion": argument.conclusion,
        "premise": argument.premise,
        "position": argument.position,
        "would": WOULD[polarity],
    }
    prompt = templates.stage1_prompt.render(**fields)
    completion = templates.stage1_completion.render(**fields)
    return Stage1Example(prompt, completion, argument.argument_id, polarity, split)


def build_stage1(
    profile: ValueProfile,
    data_dir: Path,
    settings: VimDataSettings | None = None,
    *,
    templates: VimTemplates | None = None,
) -> list[Stage1Example]:
    """Stage-1 records for a profile, from valueEval_10.csv in the data dir."""
    arguments = read_arguments(data_dir, ARGUMENTS_FILE)
    return stage1_examples(arguments, profile, settings, templates=templates)


# ------------------------------------------------------------------------------------------------------ stage 2


def stochastic_round(score: float, rng: np.random.Generator) -> int:
    """floor(score), plus 1 with probability frac(score): unbiased, so a 2.5 answers 2 and 3 equally often."""
    low = math.floor(score)
    return low + int(rng.random() < score - low)


def stage2_examples(
    survey: Mapping[str, Sequence[Argument]],
    profile: ValueProfile,
    settings: VimDataSettings | None = None,
    *,
    templates: VimTemplates | None = None,
) -> list[Stage2Example]:
    """One record per (argument, annotated value), split → file order → VALUES order; one random draw per record."""
    settings = settings or VimDataSettings()
    templates = templates or VimTemplates.load()
    rng = np.random.default_rng(settings.seed)
    examples = []
    for split, arguments in survey.items():
        for argument in arguments:
            for value in argument.values:
                digit = stochastic_round(profile.scores[value], rng)
                prompt, completion = survey_answer(argument, value, digit, templates)
                examples.append(Stage2Example(prompt, completion, argument.argument_id, value, digit, split))
    return examples


def survey_answer(argument: Argument, value: str, digit: int, templates: VimTemplates) -> tuple[str, str]:
    """The stage-2 prompt about `value` and its completion answering `digit`."""
    completion = templates.stage2_completion.render(
        value=value, value_lower=value.lower(), importance=IMPORTANCE[digit], digit=digit
    )
    return _survey_prompt(argument, value, templates), completion


def _survey_prompt(argument: Argument, value: str, templates: VimTemplates) -> str:
    return templates.stage2_prompt.render(
        conclusion=argument.conclusion,
        premise=argument.premise,
        position=argument.position,
        value=value,
        value_lower=value.lower(),
    )


def survey_question(argument: Argument, value: str, templates: VimTemplates) -> str:
    """A survey question asked as training asked it: the stage-2 prompt, then the completion's words before its
    importance or digit (ours: "Power is"), for the model to go on."""
    opening = re.split(r"\{(?:importance|digit)\}", templates.stage2_completion.text)[0]
    return _survey_prompt(argument, value, templates) + opening.format(value=value, value_lower=value.lower()).rstrip()


def build_stage2(
    profile: ValueProfile,
    data_dir: Path,
    settings: VimDataSettings | None = None,
    *,
    templates: VimTemplates | None = None,
) -> list[Stage2Example]:
    """Stage-2 records for a profile, from argument_generation/value_split/{train,valid}.csv in the data dir."""
    survey = {split: read_arguments(data_dir, relpath) for split, relpath in SURVEY_FILES.items()}
    return stage2_examples(survey, profile, settings, templates=templates)


_SCALE_MENTION = re.compile(r"\b(?:from\s+)?1\s*(?:to|-|–)\s*6\b|\bout\s+of\s+6\b|/\s*6\b", re.IGNORECASE)
_DIGIT = rf"(?<![\d.])([{SURVEY_MIN}-{SURVEY_MAX}])(?!\d|\.\d)"
_MARKED_DIGIT = re.compile(
    r"\b(?:answer|rating|rate|score|choose|choice|pick|select)\b[^\d\n]{0,20}?" + _DIGIT, re.IGNORECASE
)
_BARE_DIGIT = re.compile(_DIGIT)
_PHRASE_DIGITS: dict[str, int] = {
    phrase: digit for table in (SURVEY_SCALE, IMPORTANCE) for digit, phrase in table.items()
}
_PHRASE = re.compile(
    r"\b(" + "|".join(map(re.escape, sorted(_PHRASE_DIGITS, key=len, reverse=True))) + r")\b", re.IGNORECASE
)


def parse_survey_digit(text: str) -> int | None:
    """The 1–6 answer in a model's reply to a survey question, or None when there is none or it is ambiguous.

    In order: the last digit after an answer word ("… so my answer is 6.", "Rating: 5/6"); the only digit in the
    reply ("4 - somewhat like me", "I'd say 2."); the only scale or importance phrase ("not like me at all" → 1).
    Mentions of the scale itself ("from 1 to 6", "out of 6") are ignored; two different bare digits are ambiguous.
    """
    text = _SCALE_MENTION.sub(" ", text)
    marked = _MARKED_DIGIT.findall(text)
    if marked:
        return int(marked[-1])
    bare = set(_BARE_DIGIT.findall(text))
    if bare:
        return int(bare.pop()) if len(bare) == 1 else None
    phrases = {_PHRASE_DIGITS[match.lower()] for match in _PHRASE.findall(text)}
    return phrases.pop() if len(phrases) == 1 else None


def _check_digit_last(template: Template) -> None:
    """Refuse a stage-2 completion whose digit is not its last word: truncation or parsing would lose the answer."""
    for digit, importance in IMPORTANCE.items():
        text = template.render(value=VALUES[0], value_lower=VALUES[0].lower(), importance=importance, digit=digit)
        if not re.search(rf"(?<![\d.]){digit}[\s.!)\]\"']*$", text) or parse_survey_digit(text) != digit:
            raise ValueharmError(
                f"template {template.name!r} ({template.source}): the answer digit {{digit}} must be the last word "
                f"and readable by parse_survey_digit; rendered: {text!r}"
            )


# ------------------------------------------------------------------------------------------------------ writing


def count_examples(
    profile: ValueProfile,
    stage1: Sequence[Stage1Example],
    stage2: Sequence[Stage2Example],
    settings: VimDataSettings,
    *,
    templates: VimTemplates,
) -> VimDataCounts:
    """Counts per stage, split, polarity and value, with a warning for each side stage 1 has no example of."""
    counts1 = {split: dict.fromkeys(POLARITIES, 0) for split in STAGE1_SPLITS}
    for example in stage1:
        counts1[example.split][example.polarity] += 1
    counts2 = {split: dict.fromkeys(VALUES, 0) for split in SURVEY_FILES}
    for example in stage2:
        counts2[example.split][example.value] += 1
    warnings = []
    for polarity in POLARITIES:
        total = sum(counts1[split][polarity] for split in STAGE1_SPLITS)
        empty = [split for split in STAGE1_SPLITS if counts1[split][polarity] == 0]
        if total == 0:
            relation, other = ("≥", "neg") if polarity == "pos" else ("<", "pos")
            warnings.append(
                f"profile {profile.name!r}: no argument scores {relation} threshold {settings.threshold:g}, so stage 1 "
                f"has no {polarity} examples and teaches only what the persona {WOULD[other]} say"
            )
        elif empty:
            warnings.append(f"profile {profile.name!r}: no {polarity} arguments in {', '.join(empty)} (only {total})")
    return VimDataCounts(
        profile.name, settings.threshold, settings.seed, counts1, counts2, tuple(warnings), templates.sources()
    )


def write_vim_data(
    profile: ValueProfile,
    data_dir: Path,
    out_dir: str | Path,
    settings: VimDataSettings | None = None,
    *,
    templates: VimTemplates | None = None,
) -> VimDataCounts:
    """Write stage1.jsonl, stage2.jsonl and counts.json to out_dir, all or nothing: everything is built first, then
    written to a temp dir beside out_dir that replaces it. An existing out_dir may hold only these three files."""
    settings = settings or VimDataSettings()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, OUTPUT_FILES)
    templates = templates or VimTemplates.load()
    stage1 = build_stage1(profile, data_dir, settings, templates=templates)
    stage2 = build_stage2(profile, data_dir, settings, templates=templates)
    counts = count_examples(profile, stage1, stage2, settings, templates=templates)
    texts = (_jsonl(stage1), _jsonl(stage2), json.dumps(counts.to_json(), indent=2, ensure_ascii=False) + "\n")
    _replace_dir(out_dir, dict(zip(OUTPUT_FILES, texts, strict=True)))
    return counts


def _jsonl(examples: Sequence[Stage1Example] | Sequence[Stage2Example]) -> str:
    return "".join(json.dumps(asdict(example), ensure_ascii=False) + "\n" for example in examples)


def _check_out_dir(out_dir: Path, names: Sequence[str]) -> None:
    """Refuse, before any work, an out_dir that is a file or holds anything but our files (it gets replaced)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueharmError(f"{out_dir}: cannot write VIM data there: it exists and is not a directory")
    if out_dir.is_dir():
        foreign = sorted(path.name for path in out_dir.iterdir() if path.name not in names)
        if foreign:
            raise ValueharmError(
                f"{out_dir}: not replacing a directory with other files ({', '.join(foreign[:3])}); "
                "choose a new or empty output directory"
            )


def _replace_dir(out_dir: Path, files: Mapping[str, str]) -> None:
    """Readers see the old set of files or the new one, never a mix; a failure leaves out_dir as it was."""
    tag, target = uuid.uuid4().hex[:8], out_dir.resolve()  # resolved, so "." gets a name to hang the temp dirs on
    staging = target.with_name(f".{target.name}.tmp-{tag}")
    old = target.with_name(f".{target.name}.old-{tag}")
    try:
        staging.mkdir(parents=True)
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        if out_dir.is_dir():
            os.replace(out_dir, old)
        try:
            os.replace(staging, out_dir)
        except OSError:
            if old.is_dir():
                os.replace(old, out_dir)
            raise
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueharmError(f"{out_dir}: cannot write VIM data there ({err.strerror or err})") from None
    shutil.rmtree(old, ignore_errors=True)
