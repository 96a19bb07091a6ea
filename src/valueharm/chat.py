"""Chat (instruct) base models: prompts as conversations rendered by the tokenizer's own chat template.

With `chat` on, every prompt is a conversation instead of raw text: the method's instructions (the ICL preamble,
mitigation instructions) as the system turn where the template has one, else put before the user's text in the
user turn; the benchmark text as the user turn. A generation record's `prompt` then holds the conversation as JSON
and its `params.chat` says which of the two ("system" or "user"); each backend renders it its own way — the
tokenizer's template for hf and vllm, the server's for the OpenAI chat API. Training examples become a user turn and
an assistant turn, with the loss on the assistant turn only.

`chat: auto` decides per base: a base whose role the project knows by its role (a registry entry, by name or by its
files: `valueharm models list`; a tiny model is a base pretrained on plain text, whose template is for tests of
guard models), any other model when its tokenizer has a chat template.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from valueharm.errors import ValueharmError

ChatSetting = Literal["auto"] | bool
SYSTEM, USER = "system", "user"  # where the instructions went: params.chat
_PROBE = "valueharm-system-probe"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_chat(setting: ChatSetting, base: str | Path, tokenizer: Any) -> bool:
    """Whether prompts go to this base as conversations (see the module docstring for `auto`)."""
    from valueharm.base_model import known_role

    if setting is not True and setting is not False and setting != "auto":
        raise ValueharmError(f"chat: expected auto, true or false, got {setting!r}")
    if setting is True and not has_chat_template(tokenizer):
        raise ValueharmError(f"chat: true, but the tokenizer of {base} has no chat template")
    if setting != "auto":
        return bool(setting)
    role = known_role(base)
    return role == "chat base" if role is not None else has_chat_template(tokenizer)


def has_system_turn(tokenizer: Any) -> bool:
    """Whether the template renders a system turn (some, e.g. Gemma's, refuse one or drop it)."""
    messages = [{"role": SYSTEM, "content": _PROBE}, {"role": USER, "content": "hi"}]
    try:
        return _PROBE in tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # templates raise their own errors (jinja's raise_exception) for a role they refuse
        return False


def conversation(instructions: str, text: str, *, system_turn: bool) -> tuple[list[dict[str, str]], str]:
    """The messages for one prompt, and where the instructions went (params.chat)."""
    if not instructions.strip():
        return [{"role": USER, "content": text}], USER
    if system_turn:
        return [{"role": SYSTEM, "content": instructions.strip()}, {"role": USER, "content": text}], SYSTEM
    return [{"role": USER, "content": instructions.strip() + "\n\n" + text}], USER


def encode(messages: Sequence[dict[str, str]]) -> str:
    """A conversation as a record's `prompt`."""
    return json.dumps(list(messages), ensure_ascii=False)


def decode(prompt: str) -> list[dict[str, str]]:
    """A record's `prompt` back as messages; an error names what is wrong (imported records may hold anything)."""
    try:
        messages = json.loads(prompt)
    except json.JSONDecodeError:
        raise ValueharmError(f"a chat prompt must be a JSON list of messages, got {prompt[:60]!r}") from None
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise ValueharmError(f"a chat prompt must be a list of {{role, content}} messages, got {prompt[:60]!r}")
    return messages


def render(tokenizer: Any, prompt: str) -> str:
    """A chat record's prompt as the model's input text, ready for the assistant's turn. Tokenize it without
    adding special tokens: the template already has them."""
    return tokenizer.apply_chat_template(decode(prompt), tokenize=False, add_generation_prompt=True)


def chat_style(setting: ChatSetting, base: str, *, trust_remote_code: bool = False) -> bool | None:
    """None for raw-text prompts; for a chat base, whether its template has a system turn."""
    from valueharm.base_model import is_tiny, known_role

    if setting is False:
        return None
    if is_tiny(base):  # not built yet (a dry run): a base model, whose template has a system turn
        return True if setting is True else None
    from transformers import AutoTokenizer

    if setting == "auto" and known_role(base) == "base":
        return None  # a base model the project knows: raw text, its tokenizer need not be here
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        if setting is True:  # a model only a server has (the openai backend): its template takes a system turn
            return True
        raise ValueharmError(f"chat: cannot load the tokenizer of {base} ({str(err).splitlines()[0]})") from None
    if not resolve_chat(setting, base, tokenizer):
        return None
    return has_system_turn(tokenizer)
