"""Finding and loading pipeline folders: a local path, `default` for the embedded model, or the
name of a model installed by `v2a model pull` (in ``installed_models_dir()``)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

# The embedded default model (trained here, shipped inside the package; see docs/default-model.md).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

# Where installed models live: $V2A_HOME/models/<name>; V2A_HOME defaults to $XDG_CACHE_HOME/v2a
# (~/.cache/v2a), beside the Hugging Face cache the source files are downloaded into.
V2A_HOME_ENV = "V2A_HOME"
# What `v2a model pull` records in an installed folder: sources, hashes, the model's scope.
INSTALL_RECORD = "v2a_model.json"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def v2a_home() -> Path:
    if os.environ.get(V2A_HOME_ENV):
        return Path(os.environ[V2A_HOME_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "v2a"


def installed_models_dir() -> Path:
    return v2a_home() / "models"


def installed_models() -> dict[str, Path]:
    """Name → folder of every installed model (not the embedded one)."""
    root = installed_models_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir())
            if MODEL_NAME.match(p.name) and (p / "model_index.json").is_file()}


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """`default` → the embedded model; a pipeline folder on disk → itself; otherwise the name of
    an installed model (`v2a model pull NAME`)."""
    if str(name_or_path) == "default":
        if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the embedded default model is not installed at {DEFAULT_MODEL_DIR}; "
                "pass --model DIR with a pipeline folder (see `v2a create-model`)"
            )
        return DEFAULT_MODEL_DIR
    path = Path(name_or_path).expanduser()
    if (path / "model_index.json").is_file():
        return path
    installed = installed_models()
    if str(name_or_path) in installed:
        return installed[str(name_or_path)]
    if MODEL_NAME.match(str(name_or_path)) and not path.exists():
        names = ", ".join(["default", *installed])
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a pipeline folder nor an installed model (installed: {names}, "
            f"in {installed_models_dir()}); `v2a model pull {name_or_path}` installs a known model"
        )
    raise FileNotFoundError(f"{path} is not a pipeline folder (no model_index.json)")


# Components whose weights another installed package ships (kept out of our folders by size).
EXTERNAL_FILE = "external_components.json"


def save_pipeline(pipe, out_dir: str | Path, external_text_encoder: str | None = None) -> Path:
    """``save_pretrained`` plus, for a text encoder that an installed package ships (e.g.
    ``"minilm"``), a note instead of a copy of its weights."""
    out = Path(out_dir)
    pipe.save_pretrained(str(out))
    if external_text_encoder:
        for name in ("text_encoder", "tokenizer"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / EXTERNAL_FILE).write_text(json.dumps({"text_encoder": external_text_encoder}, indent=1))
    return out


def external_text_encoder(name_or_path: str | Path) -> str | None:
    """The packaged text encoder a pipeline folder refers to (None when it holds its own)."""
    note = resolve_model_dir(name_or_path) / EXTERNAL_FILE
    return json.loads(note.read_text())["text_encoder"] if note.is_file() else None


def _external_components(path: Path) -> dict:
    note = path / EXTERNAL_FILE
    if not note.is_file():
        return {}
    from v2a_server.configs import build_text_encoder, build_tokenizer

    kind = json.loads(note.read_text())["text_encoder"]
    return {"text_encoder": build_text_encoder({"kind": kind}).eval(), "tokenizer": build_tokenizer({"kind": kind})}


# What ``--dtype`` accepts; "auto" is float16 on an accelerator, float32 on CPU.
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")
# What ``--offload`` accepts: "model" moves one whole component at a time to the accelerator.
OFFLOAD_MODES = ("none", "model")


def resolve_dtype(dtype, device: str):
    """A dtype name (``DTYPE_NAMES``), a torch dtype or None ("auto") → the torch dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if device == "cpu" else torch.float16
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    return getattr(torch, dtype)


def load_pipeline(name_or_path: str | Path, device: str = "cpu", dtype=None, *,
                  offload: str = "none", text_encoder_cpu: bool = False):
    """Load a pipeline folder onto a device.

    Args:
        dtype: a ``DTYPE_NAMES`` name or torch dtype; None/"auto": float16 on an accelerator,
            float32 on CPU.
        offload: "model": diffusers' model CPU offload (components wait in RAM and run on
            ``device`` one at a time; for cards smaller than the model). Needs an accelerator.
        text_encoder_cpu: keep the text encoder on the CPU in float32 (it runs once per
            request; on a small card its memory is better spent on the UNet).
    Raises:
        ValueError: an unknown dtype or offload mode, or offload asked on a CPU device.
    """
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from v2a_server.pipelines import STAV2APipeline

    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if offload == "model" and torch.device(device).type == "cpu":
        raise ValueError("--offload model needs an accelerator device (e.g. --device cuda): on "
                         "the CPU the whole model already lives in main memory")
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    path = resolve_model_dir(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    pipe = STAV2APipeline.from_pretrained(str(path), dtype=torch_dtype, **_external_components(path))
    pipe.set_progress_bar_config(disable=True)
    if text_encoder_cpu:
        pipe.keep_text_encoder_on_cpu()
    if offload == "model":
        pipe.enable_model_offload(device)
    else:
        pipe.to(device)
        if text_encoder_cpu:
            pipe.text_encoder.to("cpu")
    return pipe
