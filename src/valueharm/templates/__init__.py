"""Prompt and judge templates: plain-text files in our own words, each replaceable by a user's file.

A template is text with `{field}` slots (Python format syntax; `{{`/`}}` for literal braces). A user override is
a file using the same slots, so published wording can be used exactly: `load_template(name, override=path)`, or a
directory of `<name>.txt` files passed as `template_dir`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from valueharm.errors import ValueharmError
from valueharm.registry import unknown_name_message


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
    """The built-in template `name`, or the user's file (explicit override, or `<template_dir>/<name>.txt`).

    An override may use only the built-in one's slots (it may leave some out), so a typo fails here, not mid-run.
    """
    if name not in builtin_names():
        raise ValueharmError(unknown_name_message("template", name, builtin_names()))
    builtin = Template(name, resources.files(__package__).joinpath(f"{name}.txt").read_text("utf-8"), "builtin")
    path = Path(override) if override else (Path(template_dir) / f"{name}.txt" if template_dir else None)
    if path is None or (override is None and not path.is_file()):
        return builtin
    if not path.is_file():
        raise ValueharmError(f"{path}: template file not found (for template {name!r})")
    user = Template(name, path.read_text(encoding="utf-8"), str(path))
    try:
        user_fields = user.fields
    except ValueError as err:
        raise ValueharmError(f"{path}: malformed template ({err})") from None
    unknown = user_fields - builtin.fields
    if unknown:
        raise ValueharmError(
            f"{path}: template {name!r} has unknown slot(s) {sorted(unknown)}; it may use {sorted(builtin.fields)}"
        )
    return user
