"""Target value profiles: `valueharm profiles list | sets | show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from valueharm import paths
from valueharm.cli.common import DataDir, JsonFlag, command_group, out, print_json

profiles_app = command_group("profiles", "Target value profiles.")


@profiles_app.command("list")
def profiles_list(
    profile_set: Annotated[str, typer.Option("--set", help="Profile set (see `valueharm profiles sets`).")] = "all",
    file: Annotated[Path | None, typer.Option(help="List the profiles of a custom YAML/CSV file instead.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """The profiles of a set, one row each with its ten scores."""
    from valueharm.values import VALUE_ABBREVIATIONS, VALUES, read_profile_file
    from valueharm.values import profile_set as load_set

    profiles = read_profile_file(file) if file else load_set(profile_set, paths.data_dir(data_dir))
    if as_json:
        print_json([profile.to_dict() for profile in profiles])
        return
    table = Table("profile", "family", *VALUE_ABBREVIATIONS.values(), title=f"{len(profiles)} profiles")
    for profile in profiles:
        table.add_row(profile.name, profile.family, *(f"{profile.scores[value]:g}" for value in VALUES))
    out.print(table)


@profiles_app.command("sets")
def profiles_sets(as_json: JsonFlag = False) -> None:
    """The named profile sets."""
    from valueharm.values import PROFILE_SET_HELP

    if as_json:
        print_json(PROFILE_SET_HELP)
        return
    table = Table("set", "profiles")
    for name, help_text in PROFILE_SET_HELP.items():
        table.add_row(name, help_text)
    out.print(table)


@profiles_app.command("show")
def profiles_show(
    name: str,
    file: Annotated[Path | None, typer.Option(help="Also look in this custom YAML/CSV file.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """One profile's ten scores as a bar chart, with its higher-order group means."""
    from valueharm.values import HIGHER_ORDER, SCORE_MAX, VALUES, get_profile, read_profile_file

    custom = read_profile_file(file) if file else []
    profile = get_profile(name, paths.data_dir(data_dir), custom)
    if as_json:
        payload = profile.to_dict() | {"groups": {group: profile.group_score(group) for group in HIGHER_ORDER}}
        print_json(payload)
        return
    table = Table(
        "value", "score", "", title=f"{profile.name}  ({profile.provenance}; family {profile.family})", show_edge=False
    )
    for value in VALUES:
        score = profile.scores[value]
        table.add_row(value, f"{score:g}", "█" * round(score * 4) + "·" * round((SCORE_MAX - score) * 4))
    table.add_section()
    for group in HIGHER_ORDER:
        table.add_row(f"[dim]{group}[/]", f"[dim]{profile.group_score(group):.2f}[/]", "")
    out.print(table)
