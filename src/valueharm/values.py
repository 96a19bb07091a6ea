"""Schwartz's ten basic values, their higher-order groups, value profiles and the named profile sets.

A profile gives each of the ten values an importance on the portrait-survey scale 1–6 (6 = very important).
Built-in profiles come from the published study's files in the data directory; custom ones from YAML or CSV.
Profiles that are near-copies of one another share a `family` — the independent unit of the value–harm statistics:
published ones by name (`published_family`), custom ones by a `family` key or column, any other its own.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from valueharm.data.registry import require_file
from valueharm.errors import UnknownNameError, ValueharmError
from valueharm.registry import Registry, unknown_name_message
from valueharm.yamlfile import read_yaml

# Spelled as in the column headers of the published files (valueEval_10.csv, extreme_distributions.csv).
VALUES: tuple[str, ...] = (
    "Achievement",
    "Benevolence",
    "Conformity",
    "Hedonism",
    "Power",
    "Security",
    "Self-direction",
    "Stimulation",
    "Tradition",
    "Universalism",
)
VALUE_ABBREVIATIONS: dict[str, str] = {
    "Achievement": "Ach",
    "Benevolence": "Ben",
    "Conformity": "Con",
    "Hedonism": "Hed",
    "Power": "Pow",
    "Security": "Sec",
    "Self-direction": "SD",
    "Stimulation": "Sti",
    "Tradition": "Tra",
    "Universalism": "Uni",
}
HIGHER_ORDER: dict[str, tuple[str, ...]] = {
    "Openness to Change": ("Self-direction", "Stimulation"),
    "Self-Enhancement": ("Achievement", "Hedonism", "Power"),
    "Conservation": ("Conformity", "Security", "Tradition"),
    "Self-Transcendence": ("Benevolence", "Universalism"),
}
SCORE_MIN, SCORE_MAX = 1.0, 6.0
FAMILY_COLUMN = "family"

_VALUE_ALIASES: dict[str, str] = {
    alias.lower().replace("_", "-").replace(" ", "-"): value
    for value, abbreviation in VALUE_ABBREVIATIONS.items()
    for alias in (value, abbreviation)
}


def canonical_value(name: str) -> str:
    """Map a value name in any usual spelling (`self_direction`, `SD`, `Self-Direction`) to the canonical one."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in _VALUE_ALIASES:
        raise UnknownNameError(unknown_name_message("value", name, list(VALUES)))
    return _VALUE_ALIASES[key]


@dataclass(frozen=True)
class ValueProfile:
    """A target value profile: ten scores in 1–6, one per basic value, and where it came from."""

    name: str
    scores: Mapping[str, float]
    provenance: str = "custom"
    family: str = ""  # profiles of one family are near-copies, one independent unit of analysis; "" = its own
    _vector: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"profile {self.name!r} ({self.provenance})"
        if not self.name or not self.name.strip():
            raise ValueharmError(f"{where}: empty profile name")
        if not isinstance(self.family, str):
            raise ValueharmError(f"{where}: family must be a name, got {self.family!r}")
        object.__setattr__(self, "family", self.family.strip() or self.name)
        canonical: dict[str, float] = {}
        for raw_name, raw_score in self.scores.items():
            try:
                value = canonical_value(str(raw_name))
            except UnknownNameError as err:
                raise ValueharmError(f"{where}: {err}") from None
            if value in canonical:
                raise ValueharmError(f"{where}: value {value!r} given twice")
            canonical[value] = _checked_score(raw_score, f"{where}: {value}")
        missing = [value for value in VALUES if value not in canonical]
        if missing:
            raise ValueharmError(f"{where}: missing score for {', '.join(missing)}")
        object.__setattr__(self, "scores", {value: canonical[value] for value in VALUES})
        object.__setattr__(self, "_vector", tuple(canonical[value] for value in VALUES))

    def score(self, value: str) -> float:
        return self.scores[canonical_value(value)]

    def group_score(self, group: str) -> float:
        """Mean score of a higher-order group's member values."""
        members = HIGHER_ORDER[group]
        return sum(self.scores[value] for value in members) / len(members)

    @property
    def vector(self) -> tuple[float, ...]:
        """Scores in the order of VALUES."""
        return self._vector

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scores": dict(self.scores), "provenance": self.provenance, "family": self.family}


def _checked_score(raw: object, where: str) -> float:
    try:
        score = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueharmError(f"{where}: score {raw!r} is not a number") from None
    if math.isnan(score):
        raise ValueharmError(f"{where}: score is missing")
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise ValueharmError(f"{where}: score {score:g} is outside {SCORE_MIN:g}–{SCORE_MAX:g}")
    return score


# ---------------------------------------------------------------------------------------------- reading files


def read_profile_table(path: Path, name_column: str | None = None) -> list[ValueProfile]:
    """Profiles from a CSV/TSV with a name column (`name`, `profile` or `Country`), the ten value columns and an
    optional `family` column (empty: the profile is its own family)."""
    if not path.is_file():
        raise ValueharmError(f"{path}: profile file not found")
    text = path.read_text(encoding="utf-8-sig")
    first_line = text.splitlines()[0] if text.strip() else ""
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = [column.strip() for column in reader.fieldnames or []]
    candidates = [name_column] if name_column else ["name", "profile", "Country"]
    name_col = next((column for column in candidates if column in header), None)
    if name_col is None:
        raise ValueharmError(f"{path}: no name column (expected one of {', '.join(candidates)}); header: {header}")
    value_columns: dict[str, str] = {}
    for column in header:
        if column in (name_col, FAMILY_COLUMN):
            continue
        try:
            value_columns[column] = canonical_value(column)
        except UnknownNameError:
            continue  # extra columns (notes, weights) are allowed
    missing = [value for value in VALUES if value not in value_columns.values()]
    if missing:
        raise ValueharmError(f"{path}: missing column(s) {', '.join(missing)}; header: {header}")
    profiles = []
    for row_number, row in enumerate(reader, start=2):
        row = {(key or "").strip(): value for key, value in row.items()}
        name = (row.get(name_col) or "").strip()
        scores = {value: row.get(column) for column, value in value_columns.items()}
        family = row.get(FAMILY_COLUMN) or ""
        profiles.append(ValueProfile(name, scores, provenance=f"{path.name} line {row_number}", family=family))
    return _unique(profiles, str(path))


def read_profile_yaml(path: Path) -> list[ValueProfile]:
    """Profiles from YAML: either `{profiles: [{name, scores: {value: score}, family}]}` (family optional) or
    `{name: {value: score}}`."""
    document = read_yaml(path, "profile")
    if isinstance(document, dict) and set(document) == {"profiles"}:
        document = document["profiles"]
    entries: list[tuple[str, Any, Any]]
    if isinstance(document, list):
        entries = []
        for index, item in enumerate(document):
            if not isinstance(item, dict) or "name" not in item or "scores" not in item:
                raise ValueharmError(f"{path}: profiles[{index}] must be a mapping with 'name' and 'scores'")
            extra = set(item) - {"name", "scores", "provenance", "family"}
            if extra:
                raise ValueharmError(f"{path}: profiles[{index}] has unknown key(s) {', '.join(sorted(extra))}")
            family = item.get("family", "")
            if not isinstance(family, str | int) or isinstance(family, bool):
                raise ValueharmError(f"{path}: profiles[{index}]: family must be a name, got {family!r}")
            entries.append((str(item["name"]), item["scores"], str(family)))
    elif isinstance(document, dict):
        entries = [(str(name), scores, "") for name, scores in document.items()]
    else:
        raise ValueharmError(f"{path}: expected a mapping of profile names to scores, or a 'profiles' list")
    profiles = []
    for name, scores, family in entries:
        if not isinstance(scores, dict):
            raise ValueharmError(f"{path}: profile {name!r}: scores must be a mapping of value to score")
        profiles.append(ValueProfile(name, scores, provenance=path.name, family=family))
    return _unique(profiles, str(path))


def read_profile_file(path: str | Path) -> list[ValueProfile]:
    """Custom profiles from a `.yaml`/`.yml` or a `.csv`/`.tsv` file."""
    path = Path(path)
    if path.suffix.lower() in {".yaml", ".yml"}:
        return read_profile_yaml(path)
    if path.suffix.lower() in {".csv", ".tsv", ".txt"}:
        return read_profile_table(path)
    raise ValueharmError(f"{path}: unsupported profile file type (use .yaml, .yml, .csv or .tsv)")


def _unique(profiles: list[ValueProfile], where: str) -> list[ValueProfile]:
    seen: set[str] = set()
    for profile in profiles:
        if profile.name in seen:
            raise ValueharmError(f"{where}: duplicate profile name {profile.name!r}")
        seen.add(profile.name)
    return profiles


# ------------------------------------------------------------------------------------------------ profile sets

EXTREME_NAMES: tuple[str, ...] = (*VALUE_ABBREVIATIONS.values(), *(g.replace(" ", "_") for g in HIGHER_ORDER))

PROFILE_SETS: Registry[Callable[[Path], list[ValueProfile]]] = Registry("profile set")
PROFILE_SET_HELP: dict[str, str] = {}


def _profile_set(name: str, help_text: str):
    def decorator(function: Callable[[Path], list[ValueProfile]]) -> Callable[[Path], list[ValueProfile]]:
        PROFILE_SETS.add(name, function)
        PROFILE_SET_HELP[name] = help_text
        return function

    return decorator


def published_family(name: str) -> str:
    """The family of a published profile: an extreme and its close ESS respondents (`Hed`, `close_Hed`,
    `close_Hed_2` … → `Hed`), a reverse and its close one (`reverse_Hed`, `close_reverse_Hed_1` → `reverse_Hed`);
    any other name is its own family."""
    match = _CLOSE.fullmatch(name)
    base = match.group(1) if match else name
    core = base.removeprefix("reverse_")
    return base if core in EXTREME_NAMES else name


_CLOSE = re.compile(r"close_(.+?)(?:_\d+)?")


def _published(data_dir: Path) -> dict[str, ValueProfile]:
    table = read_profile_table(require_file(data_dir, "extreme_distributions.csv"))
    return {p.name: replace(p, family=published_family(p.name)) for p in table}


def _names_file(data_dir: Path, filename: str) -> list[ValueProfile]:
    published = _published(data_dir)
    path = require_file(data_dir, filename)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    unknown = [name for name in names if name not in published]
    if unknown:
        raise ValueharmError(f"{path}: names not in extreme_distributions.csv: {', '.join(unknown[:5])}")
    return [published[name] for name in names]


@_profile_set("vim154", "the 154 profiles of the published sweep: 14 extremes + 140 close ESS respondents")
def _vim154(data_dir: Path) -> list[ValueProfile]:
    return _names_file(data_dir, "target_distribution_names_full.txt")


@_profile_set("vim56", "the 56-profile subset: each extreme and its close _3, _7, _10")
def _vim56(data_dir: Path) -> list[ValueProfile]:
    return _names_file(data_dir, "target_distribution_names.txt")


@_profile_set("extremes", "the 14 extremes: one value (or higher-order group) at 6, the rest at 1")
def _extremes(data_dir: Path) -> list[ValueProfile]:
    published = _published(data_dir)
    return [published[name] for name in EXTREME_NAMES]


@_profile_set("reverse", "the 28 reverse profiles: reverse_* and close_reverse_*_1")
def _reverse(data_dir: Path) -> list[ValueProfile]:
    return [p for p in _published(data_dir).values() if p.name.startswith(("reverse_", "close_reverse_"))]


def _ess(data_dir: Path) -> list[ValueProfile]:
    published = _published(data_dir)
    table = read_profile_table(require_file(data_dir, "country_and_group.csv"))
    return [p for p in table if p.name not in published]


@_profile_set("ess-countries", "28 European Social Survey country means")
def _ess_countries(data_dir: Path) -> list[ValueProfile]:
    return [p for p in _ess(data_dir) if not p.name.startswith("Group_")]


@_profile_set("ess-groups", "100 European Social Survey social-group means")
def _ess_groups(data_dir: Path) -> list[ValueProfile]:
    return [p for p in _ess(data_dir) if p.name.startswith("Group_")]


@_profile_set("all", "every built-in profile: the published 182 and the 128 ESS countries and groups")
def _all(data_dir: Path) -> list[ValueProfile]:
    return list(_published(data_dir).values()) + _ess(data_dir)


def profile_set(name: str, data_dir: Path) -> list[ValueProfile]:
    """The profiles of a named set (see PROFILE_SETS), read from the data directory."""
    return PROFILE_SETS.get(name)(data_dir)


def get_profile(name: str, data_dir: Path, custom: Iterable[ValueProfile] = ()) -> ValueProfile:
    """A profile by name among the custom ones and every built-in one; unknown names list close matches."""
    known = {p.name: p for p in profile_set("all", data_dir)}
    for profile in custom:
        known[profile.name] = profile
    if name not in known:
        raise UnknownNameError(unknown_name_message("profile", name, list(known)))
    return known[name]


def resolve_profiles(
    names: Iterable[str] = (), sets: Iterable[str] = (), files: Iterable[str | Path] = (), *, data_dir: Path
) -> list[ValueProfile]:
    """Profiles named directly, by set, or from custom files — in that order, each name once."""
    custom = [p for path in files for p in read_profile_file(path)]
    chosen: dict[str, ValueProfile] = {}
    for name in names:
        chosen.setdefault(name, get_profile(name, data_dir, custom))
    for set_name in sets:
        for profile in profile_set(set_name, data_dir):
            chosen.setdefault(profile.name, profile)
    for profile in custom:
        chosen.setdefault(profile.name, profile)
    return list(chosen.values())
