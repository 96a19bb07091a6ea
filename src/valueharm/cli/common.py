"""What every command shares: the root app, the consoles, option types and small parsing helpers."""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.console import Console

from valueharm import paths
from valueharm.errors import ValueharmError
from valueharm.settings import problem_message

app = typer.Typer(
    help="Safety research on value-aligned LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Piped output keeps whole table cells instead of wrapping them to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help=f"Data directory (default: ${paths.DATA_ENV}, else the user cache)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ProfileNames = Annotated[list[str] | None, typer.Option("--profile", help="A profile by name (repeatable).")]
ProfileSets = Annotated[list[str] | None, typer.Option("--set", help="A profile set, e.g. vim154 (repeatable).")]
ProfileFiles = Annotated[
    list[Path] | None, typer.Option("--profiles-file", help="Custom profiles (YAML/CSV); all of them are used.")
]
TemplateDir = Annotated[
    Path | None, typer.Option(help="Directory of <name>.txt files that replace built-in prompt templates.")
]
Progress = Annotated[bool, typer.Option("--progress/--quiet", help="Progress bars.")]
Base = Annotated[
    str, typer.Option("--base", help="Base model: a registry name (models list), tiny:VARIANT, a local path or hub id.")
]
TrustRemoteCode = Annotated[bool, typer.Option(help="Run code shipped with the model (off unless asked).")]
ChatOption = Annotated[
    str,
    typer.Option("--chat", help="auto, true or false: prompts and training data in the base's chat template."),
]


def chat_setting(text: str) -> Any:
    """`--chat` as the config's `chat:` value."""
    choices = {"auto": "auto", "true": True, "false": False}
    if text.lower() not in choices:
        raise ValueharmError(f"--chat: expected auto, true or false, got {text!r}")
    return choices[text.lower()]


def command_group(name: str, help_text: str) -> typer.Typer:
    """A command group `valueharm NAME …` registered on the root app."""
    sub = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def resolve_profiles(names: list[str] | None, sets: list[str] | None, files: list[Path] | None, data_dir: Path) -> list:
    """The profiles named by --profile/--set/--profiles-file; none at all is a user error."""
    from valueharm.values import resolve_profiles as resolve

    profiles = resolve(names or [], sets or [], files or [], data_dir=data_dir)
    if not profiles:
        raise ValueharmError("no profiles given: use --profile NAME, --set NAME or --profiles-file FILE")
    return profiles


def key_values(pairs: list[str] | None, option: str) -> dict[str, str]:
    """Repeated NAME=VALUE options as a dict."""
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueharmError(f"{option} {pair!r}: expected NAME=VALUE")
        parsed[key] = value
    return parsed


def scalar(text: str) -> object:
    """A command-line value as the number or boolean it spells, else the string."""
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def existing_store(run: Path) -> Path:
    """The results.sqlite of a run directory (or the file itself); a missing one is a user error."""
    path = run / "results.sqlite" if run.is_dir() else run
    if not path.is_file():
        raise ValueharmError(f"{run}: no results.sqlite here (generate into it first)")
    return path


# ------------------------------------------------------------------------------------------ options from settings


@dataclass(frozen=True)
class FromSettings:
    """A command parameter whose value is a settings model built from options derived from the model's fields."""

    model: type[BaseModel]
    prefix: str = ""  # option names are --{prefix}{field}, dashed
    exclude: tuple[str, ...] = ()


def with_settings(**groups: FromSettings) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replace each named parameter of a command by one option per field of its settings model — name, type,
    published default and help all come from the field — and call the command with the model built from them."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        fields: dict[str, tuple[str, str, FieldInfo]] = {}  # option parameter → (group, field, info)
        parameters = []
        for parameter in inspect.signature(command, eval_str=True).parameters.values():
            group = groups.get(parameter.name)
            if group is None:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
                continue
            for name, info in group.model.model_fields.items():
                if name not in group.exclude:
                    option = f"{group.prefix}{name}"
                    fields[option] = (parameter.name, name, info)
                    parameters.append(_option(option, info))

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            chosen: dict[str, dict[str, Any]] = {name: {} for name in groups}
            for option, (group, name, info) in fields.items():
                value = values.pop(option)
                chosen[group][name] = _split(value) if _is_sequence(info) else value
            for name, group in groups.items():
                try:
                    values[name] = group.model.model_validate(chosen[name])
                except ValidationError as error:
                    raise ValueharmError(_option_problems(error, group)) from None
            return command(**values)

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def _option_problems(error: ValidationError, group: FromSettings) -> str:
    """A settings error as one line naming the options, e.g. `--epochs: Input should be …, got 0`."""
    return "; ".join(
        f"--{_dashed(group.prefix + str(problem['loc'][0]))}: {problem_message(problem, group.model)}"
        for problem in error.errors()
    )


def _option(name: str, info: FieldInfo) -> inspect.Parameter:
    """A typer option for one settings field; a sequence is one comma-separated value."""
    kind, default, help_text = info.annotation, info.get_default(call_default_factory=True), info.description or ""
    if _is_sequence(info):
        kind, default, help_text = str, ",".join(default), help_text.rstrip(".") + ", comma-separated."
    flag = f"--{_dashed(name)}" + (f"/--no-{_dashed(name)}" if kind is bool else "")
    annotation = Annotated[kind, typer.Option(flag, help=help_text)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _is_sequence(info: FieldInfo) -> bool:
    return typing.get_origin(info.annotation) in (tuple, list)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _dashed(name: str) -> str:
    return name.replace("_", "-")
