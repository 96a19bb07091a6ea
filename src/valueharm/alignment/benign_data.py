"""Prompt/completion pairs for the benign fine-tuning baselines, each dataset in its own prompt format.

Alpaca and Dolly share the instruction format; an example with an input field takes `benign_instruction_with_input`
where the template dir has one (the published prompts have a form with and one without an input), else the same
template, whose `{context_block}` is then empty or "Input: …".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from valueharm.data.benign import BenignExample, load_benign
from valueharm.templates import Template, load_template

# Which template formats each dataset; Alpaca and Dolly share the instruction format.
BENIGN_TEMPLATES = {
    "grammar": "benign_grammar",
    "alpaca": "benign_instruction",
    "dolly": "benign_instruction",
    "dolly-no-safety": "benign_instruction",
    "samsum": "benign_samsum",
}


@dataclass(frozen=True)
class BenignPair:
    prompt: str
    completion: str
    item_id: str


def format_benign(example: BenignExample, template: Template, with_input: Template | None = None) -> BenignPair:
    """The pair in `template`, or in `with_input` for an example with an input field."""
    context_block = f"Input: {example.context}\n" if example.context else ""
    chosen = with_input if with_input is not None and example.context else template
    prompt = chosen.render(instruction=example.instruction, context=example.context, context_block=context_block)
    return BenignPair(prompt, " " + example.response.strip(), example.item_id)


def benign_pairs(
    name: str, data_dir: Path, *, limit: int | None = None, template_dir: str | Path | None = None
) -> list[BenignPair]:
    """The dataset's training pairs in its own format (a user template in `template_dir` replaces ours)."""
    examples = load_benign(name, data_dir, limit)  # unknown names fail here, listing the known ones
    template = load_template(BENIGN_TEMPLATES[name], template_dir=template_dir)
    with_input = None
    if BENIGN_TEMPLATES[name] == "benign_instruction":
        with_input = load_template("benign_instruction_with_input", template_dir=template_dir)
    return [format_benign(example, template, with_input) for example in examples]
