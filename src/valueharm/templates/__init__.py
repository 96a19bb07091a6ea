"""Prompt and judge templates: plain-text files in our own words, each replaceable by a user's file.

A template is text with `{field}` slots (Python format syntax; `{{`/`}}` for literal braces). A user override is
a file using the slots its renderer supplies (`SLOTS`: more than our wording uses, so published wording loads as it
is): `load_template(name, override=path)`, or a directory of `<name>.txt` files passed as `template_dir`.
Optional files (`VARIANTS`) refine a template where the directory has them — an ICL preamble per benchmark kind,
an instruction prompt for examples with an input field — and fall back to their base template otherwise.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from valueharm.errors import ValueharmError
from valueharm.registry import unknown_name_message
from valueharm.values import VALUES

VALUE_SLOTS: dict[str, str] = {value.lower().replace("-", "_"): value for value in VALUES}  # {self_direction}: …
_STAGE1 = frozenset({"conclusion", "premise", "position", "would"})
_BENIGN = frozenset({"instruction", "context", "context_block"})
SLOTS: dict[str, frozenset[str]] = {  # every slot a renderer supplies, where more than our wording uses
    "vim_stage1_prompt": _STAGE1,
    "vim_stage1_completion": _STAGE1,
    "vim_stage2_prompt": frozenset({"conclusion", "premise", "position", "value", "value_lower"}),
    "vim_stage2_completion": frozenset({"value", "value_lower", "importance", "digit"}),
    # ratings: the list of ten; each value's score by its lower-case name; query: the benchmark text, placed by the
    # preamble itself instead of after it
    "icl_preamble": frozenset({"ratings", "query", *VALUE_SLOTS}),
    "benign_instruction": _BENIGN,
    "benign_grammar": _BENIGN,
    "benign_samsum": _BENIGN,
}
VARIANTS: dict[str, str] = {  # optional file → the template used where it is absent
    "icl_preamble_completion": "icl_preamble",
    "icl_preamble_instruction": "icl_preamble",
    "benign_instruction_with_input": "benign_instruction",
}


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    source: str  # "builtin" or the override file's path, recorded with the outputs it made

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(field for _, field, _, _ in string.Formatter().parse(self.text) if field)

    def render(self, **values: object) -> str:
        missing = self.fields - set(values)
        if missing:
            raise ValueharmError(f"template {self.name!r} ({self.source}): no value for {', '.join(sorted(missing))}")
        return self.text.format(**values)


def builtin_names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__package__).iterdir() if p.name.endswith(".txt"))


def load_template(name: str, override: str | Path | None = None, template_dir: str | Path | None = None) -> Template:
    """The built-in template `name`, or the user's file (explicit override, or `<template_dir>/<name>.txt`); an
    optional name (`VARIANTS`) without a user file is its base template.

    An override may use only the slots its renderer supplies (it may leave some out), so a typo fails here, not
    mid-run.
    """
    base = VARIANTS.get(name, name)
    if base not in builtin_names():
        raise ValueharmError(unknown_name_message("template", name, [*builtin_names(), *VARIANTS]))
    builtin = Template(base, resources.files(__package__).joinpath(f"{base}.txt").read_text("utf-8"), "builtin")
    path = Path(override) if override else (Path(template_dir) / f"{name}.txt" if template_dir else None)
    if path is None or (override is None and not path.is_file()):
        return load_template(base, template_dir=template_dir) if base != name else builtin
    if not path.is_file():
        raise ValueharmError(f"{path}: template file not found (for template {name!r})")
    user = Template(name, path.read_text(encoding="utf-8"), str(path))
    try:
        user_fields = user.fields
    except ValueError as err:
        raise ValueharmError(f"{path}: malformed template ({err})") from None
    accepted = builtin.fields | SLOTS.get(base, frozenset())
    unknown = user_fields - accepted
    if unknown:
        raise ValueharmError(
            f"{path}: template {name!r} has unknown slot(s) {sorted(unknown)}; it may use {sorted(accepted)}"
        )
    return user
