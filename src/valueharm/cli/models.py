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
    """Every registered checkpoint: role, hub id, pinned revision, licence, whether it is fetched, its scorer spec."""
    from valueharm.models import MODELS, locate, pinned_revision

    rows = []
    for name, entry in MODELS.items():
        try:
            fetched = str(locate(name).path)
        except ValueharmError:
            fetched = None
        rows.append({
            "name": name, "role": entry.role, "hub_id": entry.hub_id, "revision": pinned_revision(entry),
            "licence": entry.licence, "gated": entry.gated, "scorer": entry.scorer, "why": entry.why,
            "fetched": fetched,
        })  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table("name", "role", "hub id @ revision", "licence", "scorer spec", "fetched")
    for row in rows:
        revision = row["revision"][:12] if row["revision"] else "pinned at first fetch"
        licence = row["licence"] + (" [yellow](gated)[/]" if row["gated"] else "")
        table.add_row(row["name"], row["role"], f"{row['hub_id']} @ {revision}", licence, row["scorer"] or "",
                      "[green]yes[/]" if row["fetched"] else "no")  # fmt: skip
    out.print(table)


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Registry names (see `models list`).")] = None,
    role: Annotated[str | None, typer.Option(help="Every checkpoint of this role, e.g. regard or guard.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Download checkpoints into the Hugging Face cache (resuming partial files); a gated one needs HF_TOKEN."""
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
