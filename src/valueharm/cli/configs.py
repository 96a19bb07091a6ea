"""Built-in experiment configs: `valueharm configs list | show NAME`; run one by name with `valueharm run NAME`."""

from __future__ import annotations

import sys

import yaml
from rich.table import Table

from valueharm.cli.common import JsonFlag, command_group, out, print_json

configs_app = command_group("configs", "Built-in experiment configs, each runnable by name: `valueharm run NAME`.")


def description(text: str) -> str:
    """A config's description: the first line of its leading comment, with "…" where the sentence goes on."""
    for line in text.splitlines():
        if not line.startswith("#"):
            return ""
        if line.lstrip("# ").strip():
            first = line.lstrip("# ").rstrip()
            return first if first.endswith((".", "!", "?")) else first.rstrip(",;:") + " …"
    return ""


@configs_app.command("list")
def configs_list(as_json: JsonFlag = False) -> None:
    """The built-in configs, each with its description."""
    from valueharm.experiment.config import builtin_config_names, builtin_config_text

    rows = [{"name": name, "description": description(builtin_config_text(name))} for name in builtin_config_names()]
    if as_json:
        print_json(rows)
        return
    table = Table("config", "description")
    for row in rows:
        table.add_row(row["name"], row["description"])
    out.print(table)


@configs_app.command("show")
def configs_show(name: str, as_json: JsonFlag = False) -> None:
    """A built-in config's YAML as shipped, comments included (save it to a file to adapt it)."""
    from valueharm.experiment.config import builtin_config_text

    text = builtin_config_text(name)
    if as_json:
        print_json(yaml.safe_load(text))
        return
    sys.stdout.write(text)
