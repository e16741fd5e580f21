"""Light checks of a model directory on disk (no torch, no transformers).

Both step one (optimize) and the local platform (deploy) must refuse a directory that is not a
Hugging Face-style model *before* anything heavy starts: importing torch costs seconds and a vLLM
server tens of seconds, and their errors for a wrong path are long and indirect. This module only
reads file names and ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llm_rollout.errors import PermanentError

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
"""File names that hold weights (sharded or not); index files are not weights."""


def local_path(uri_or_path: str | Path) -> Path:
    """Turns a local path or ``file://`` URI into an absolute, user-expanded path.

    Args:
        uri_or_path: ``/models/x``, ``~/models/x`` or ``file:///models/x``.

    Returns:
        The absolute path (it need not exist).
    """
    text = str(uri_or_path)
    if text.startswith("file://"):
        text = urlparse(text).path
    return Path(text).expanduser().absolute()


def weight_files(model_dir: str | Path) -> list[Path]:
    """Lists the weight files directly inside ``model_dir``, sorted by name.

    Args:
        model_dir: The model directory.

    Returns:
        The files matching :data:`WEIGHT_PATTERNS` (empty when there are none).
    """
    root = Path(model_dir)
    found: set[Path] = set()
    for pattern in WEIGHT_PATTERNS:
        found.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(found)


def weights_bytes(model_dir: str | Path) -> int:
    """Total size in bytes of the weight files of ``model_dir``."""
    return sum(p.stat().st_size for p in weight_files(model_dir))


def check_model_dir(model_dir: str | Path, *, field: str = "model_dir") -> Path:
    """Checks that ``model_dir`` holds a loadable model: ``config.json`` and weight files.

    Args:
        model_dir: A directory or ``file://`` URI.
        field: What the caller calls the argument, for the message.

    Returns:
        The absolute path of the model directory.

    Raises:
        PermanentError: When the path does not exist, is not a directory, has no (valid)
            ``config.json`` or has no weight files. The message names what is missing and
            what a model directory must contain.
    """
    path = local_path(model_dir)
    what = "a model directory must contain config.json and *.safetensors (or pytorch_model*.bin) weights"
    if not path.exists():
        raise PermanentError(f"{field} {path} does not exist; {what}")
    if not path.is_dir():
        raise PermanentError(f"{field} {path} is a file, not a directory; {what}")
    config = path / "config.json"
    if not config.is_file():
        listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise PermanentError(f"{field} {path} is not a model: no config.json (it holds {listing}); {what}")
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise PermanentError(f"{field} {path}: config.json cannot be read as JSON ({err})") from None
    if not isinstance(data, dict) or not (data.get("model_type") or data.get("architectures")):
        raise PermanentError(
            f"{field} {path}: config.json has neither model_type nor architectures, "
            "so it is not a transformers model config"
        )
    if not weight_files(path):
        raise PermanentError(f"{field} {path} is not a model: config.json is there but no weight files; {what}")
    return path


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """Returns the parsed ``config.json`` of a model directory (``{}`` when unreadable)."""
    try:
        data = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def quantization_summary(model_dir: str | Path) -> dict[str, Any]:
    """Summarises how a model directory is quantized, from its ``config.json``.

    Args:
        model_dir: The model directory.

    Returns:
        ``{}`` for an unquantized model, else ``quant_method``, ``format`` and, for
        compressed-tensors, per group ``weights``/``input_activations`` as ``int8``, ``float8``,
        ``int4`` ... (``type`` + ``num_bits``).
    """
    qc = read_config(model_dir).get("quantization_config")
    if not isinstance(qc, dict):
        return {}
    out: dict[str, Any] = {"quant_method": qc.get("quant_method"), "format": qc.get("format")}
    groups = []
    for group in (qc.get("config_groups") or {}).values():
        if not isinstance(group, dict):
            continue
        entry = {}
        for role in ("weights", "input_activations"):
            args = group.get(role)
            if isinstance(args, dict):
                entry[role] = f"{args.get('type', '?')}{args.get('num_bits', '?')}"
        groups.append(entry)
    if groups:
        out["groups"] = groups
    return out


def model_digest(model_dir: str | Path) -> str:
    """A content digest of a model directory: ``sha256:<hex>`` over its config and weight files.

    Two directories with the same bytes get the same digest wherever they live, so a scheduled
    rerun that produced the same model as the stable one can be recognised ("already promoted").

    Args:
        model_dir: The model directory.

    Returns:
        ``sha256:`` followed by 64 hex digits.
    """
    root = local_path(model_dir)
    digest = hashlib.sha256()
    files = [root / "config.json", *weight_files(root)]
    for path in files:
        if not path.is_file():
            continue
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
"""config.json keys that state a model's context length (vLLM 0.32
``transformers_utils/model_arch_config_convertor.py``, ``derive_max_model_len_and_key``)."""


def context_limit(model_dir: str | Path) -> tuple[int | None, bool]:
    """The longest context the model supports, the way vLLM derives it, and whether it is exact.

    vLLM 0.32 (``derive_max_model_len_and_key``, then ``config/model.py`` ``_get_and_verify_max_len``)
    takes the smallest of :data:`CONTEXT_KEYS` in ``config.json`` (``model_max_length`` wins when
    set) and the tokenizer's ``model_max_length``, then scales it by RoPE scaling factors. This reads
    the same keys; with RoPE scaling in the config the value is a lower bound (``exact`` False):
    callers may default to it but must not refuse a larger one on its word.

    Args:
        model_dir: The model directory.

    Returns:
        ``(limit, exact)``; ``(None, False)`` when the config names no context length.
    """
    path = Path(model_dir)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None, False
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    values = [int(v) for k in CONTEXT_KEYS if isinstance(v := text.get(k), int | float) and v > 0]
    limit = int(text["model_max_length"]) if isinstance(text.get("model_max_length"), int) else min(values, default=0)
    try:
        tokenizer = json.loads((path / "tokenizer_config.json").read_text())
        tok_max = tokenizer.get("model_max_length")
        if isinstance(tok_max, int) and tok_max > 0:
            limit = min(limit, tok_max) if limit else tok_max
    except (OSError, ValueError):
        pass
    if not limit:
        return None, False
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    entries = [rope] if "rope_type" in rope or "type" in rope or "factor" in rope else list(rope.values())
    scaled = any(
        isinstance(e, dict) and e.get("factor") and (e.get("rope_type") or e.get("type")) != "default" for e in entries
    )
    return limit, not scaled
