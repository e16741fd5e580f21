"""What step one checks before any heavy import: the scheme, a user recipe, the calibration data and
the output directory, plus the schemes themselves and the calibration reader.

:mod:`llm_rollout.optimize` runs these first, in the pipeline's interpreter, so a bad input is
refused in a second with the field and the fix instead of after llmcompressor has loaded.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_rollout.bounded import load_yaml, read_regular_file
from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.model_files import check_model_dir, local_path

SCHEMES: dict[str, str] = {
    "W8A8": "int8 weights (per channel) and int8 activations (dynamic, per token)",
    "FP8_DYNAMIC": "FP8 e4m3 weights (per channel) and FP8 activations (dynamic, per token)",
    "W4A16": "int4 weights (groups of 128) with 16-bit activations",
}
"""The schemes this step builds a recipe for, with what they store."""

GPTQ_WITH_CALIBRATION = ("W8A8", "W4A16")
"""Schemes that use GPTQ when calibration data is given (round to nearest otherwise)."""

METADATA_FILE = "optimization.json"
"""Written into the output directory: the metadata of the run that made it."""

DEFAULT_IGNORE = ("lm_head",)

LineSink = Callable[[str], None]


RECIPE_LIMIT = 1024 * 1024
"""Bytes a recipe YAML may have."""
CALIBRATION_FILE_LIMIT = 1024 * 1024 * 1024
"""Bytes one calibration file may have (oneshot calibrates on a few hundred samples)."""


def check_scheme(scheme: str, *, preset_schemes: list[str] | None = None) -> str:
    """Checks a scheme name; returns it upper-cased.

    Args:
        scheme: ``W8A8``, ``FP8_DYNAMIC`` or ``W4A16`` (case-insensitive).
        preset_schemes: The preset scheme names of the installed compressed-tensors, when known;
            the scheme must be one of them too, and the message lists the others.

    Raises:
        SpecError: When the scheme is not one this step builds a recipe for, or the installed
            llmcompressor does not know it.
    """
    name = str(scheme or "").strip().upper()
    known = ", ".join(SCHEMES)
    if name not in SCHEMES:
        if preset_schemes is None:
            preset_schemes = installed_preset_schemes()
        others = ""
        if preset_schemes:
            extra = sorted(set(preset_schemes) - set(SCHEMES))
            others = f"; llmcompressor also has presets {', '.join(extra)}, which need a recipe YAML"
        raise SpecError(
            "scheme",
            f"unknown quantization scheme {scheme!r}",
            f"use one of {known}{others}, or give a recipe YAML (recipe_path)",
        )
    if preset_schemes is not None and name not in preset_schemes:
        raise SpecError(
            "scheme",
            f"the installed llmcompressor/compressed-tensors has no preset scheme {name!r}",
            f"install llmcompressor 0.14 (presets include {known}) or give a recipe YAML",
        )
    return name


def installed_preset_schemes() -> list[str] | None:
    """The preset scheme names of compressed-tensors when it is importable here, else None."""
    if importlib.util.find_spec("compressed_tensors") is None:
        return None
    try:
        from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES
    except ImportError:
        return None
    return sorted(PRESET_SCHEMES)


def check_recipe(recipe_path: str | Path) -> str:
    """Checks that a recipe YAML exists, parses and names at least one modifier.

    Args:
        recipe_path: The file.

    Returns:
        The recipe text.

    Raises:
        SpecError: When it cannot be read, is not valid YAML or has no ``*_stage`` entry with
            ``*_modifiers`` (llmcompressor would silently apply nothing).
    """

    path = local_path(recipe_path)
    raw = read_regular_file(path, "recipe_path", RECIPE_LIMIT, "recipe YAML")  # a regular file, bounded
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("recipe_path", f"{path} is not UTF-8 text", "save the recipe as UTF-8 YAML") from None
    data = load_yaml(text, "recipe_path", str(path)[:200])  # no aliases: they expand before any check
    example = "e.g. quant_stage: {quant_modifiers: {QuantizationModifier: {targets: [Linear], scheme: W8A8}}}"
    if not isinstance(data, dict):
        raise SpecError(
            "recipe_path",
            f"{path} holds a {type(data).__name__}, not a recipe mapping",
            f"write stages of modifiers, {example}",
        )
    modifiers = [
        mod
        for key, stage in data.items()
        if str(key).endswith("_stage") and isinstance(stage, dict)
        for group_key, group in stage.items()
        if str(group_key).endswith("_modifiers") and isinstance(group, dict)
        for mod in group
    ]
    if not modifiers:
        raise SpecError(
            "recipe_path",
            f"{path} has no '<name>_stage' with '<name>_modifiers' in it, so llmcompressor would apply nothing",
            f"write stages of modifiers, {example}",
        )
    return text


def check_calibration(calibration: str | Path | None) -> Path | None:
    """Checks that calibration data, when given, exists (a text/JSONL file or a dataset dir)."""
    if calibration in (None, ""):
        return None
    path = local_path(calibration)
    if not path.exists():
        raise SpecError(
            "calibration",
            f"{path} does not exist",
            "give a text file (one sample per line), a JSONL file with a 'text' field, "
            "or a dataset directory (datasets.save_to_disk or text/JSONL files)",
        )
    if not path.is_dir() and not path.is_file():
        # A device, FIFO or /proc entry never ends (issue 31); only regular files and directories are read.
        raise SpecError(
            "calibration",
            f"{path} is not a regular file or a directory (a device, pipe or /proc entry)",
            "give a text or JSONL file, or a dataset directory",
        )
    return path


def check_output_dir(model_dir: Path, out_dir: str | Path) -> Path:
    """Checks that ``out_dir`` may be (re)written: not the input, and empty or an earlier output.

    Raises:
        PermanentError: When writing there could destroy something that is not ours.
    """
    out = local_path(out_dir)
    if out == model_dir or model_dir in out.parents or out in model_dir.parents:
        raise PermanentError(f"out_dir {out} overlaps model_dir {model_dir}; give a separate output directory")
    if out.is_file():
        raise PermanentError(f"out_dir {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise PermanentError(
            f"out_dir {out} is not empty and is not an earlier optimize output (no {METADATA_FILE}); "
            "refusing to overwrite it"
        )
    return out


def preflight(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    scheme: str = "W8A8",
    recipe_path: str | None = None,
    calibration: str | None = None,
) -> dict[str, Any]:
    """Runs every check that needs no heavy import; returns the normalised arguments.

    Raises:
        PermanentError: Not a model directory, or an output directory that must not be written.
        SpecError: Unknown scheme, unreadable/empty recipe, missing calibration data.
    """
    src = check_model_dir(model_dir, field="model_dir")
    out = check_output_dir(src, out_dir)
    recipe_text = check_recipe(recipe_path) if recipe_path else None
    name = "custom" if recipe_path else check_scheme(scheme)
    cal = check_calibration(calibration)
    return {"model_dir": src, "out_dir": out, "scheme": name, "recipe_text": recipe_text, "calibration": cal}


# The heavy part (runs where llmcompressor is installed) --------------------------------------


def _calibration_text(path: Path) -> str:
    """A calibration file's text: a regular file of at most :data:`CALIBRATION_FILE_LIMIT` bytes."""
    return read_regular_file(path, "calibration", CALIBRATION_FILE_LIMIT, "calibration").decode("utf-8", "replace")


def load_calibration_texts(path: Path) -> list[str]:
    """Reads calibration samples from a file or a dataset directory.

    Args:
        path: ``*.txt`` (one sample per non-empty line), ``*.jsonl`` (a ``text`` field per line),
            ``*.json`` (a list of strings or of ``{"text": ...}``), or a directory: a
            ``datasets.save_to_disk`` dataset with a ``text`` column, or text/JSONL files in it.

    Returns:
        The samples, in file order.

    Raises:
        PermanentError: When nothing usable is found.
    """
    texts: list[str] = []
    if path.is_dir():
        if any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
            if "text" not in ds.column_names:
                raise PermanentError(f"calibration dataset {path} has no 'text' column (columns: {ds.column_names})")
            texts = [t for t in ds["text"] if isinstance(t, str) and t.strip()]
        else:
            for item in sorted(path.iterdir()):
                if item.is_file() and item.suffix in (".txt", ".jsonl", ".json"):
                    texts += load_calibration_texts(item)
    elif path.suffix == ".jsonl":
        for line in _calibration_text(path).splitlines():
            if line.strip():
                row = json.loads(line)
                text = row.get("text") if isinstance(row, dict) else row
                if isinstance(text, str) and text.strip():
                    texts.append(text)
    elif path.suffix == ".json":
        rows = json.loads(_calibration_text(path))
        for row in rows if isinstance(rows, list) else []:
            text = row.get("text") if isinstance(row, dict) else row
            if isinstance(text, str) and text.strip():
                texts.append(text)
    else:
        texts = [line for line in _calibration_text(path).splitlines() if line.strip()]
    if not texts:
        raise PermanentError(f"calibration data {path} holds no text samples")
    return texts
