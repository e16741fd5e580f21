"""The spec reference, read from the typed spec itself: every field's type, default and doc.

The one source is the spec's models (:mod:`llm_rollout.spec`): their field annotations and
constraints, their defaults, and the Google-style ``Attributes:`` sections of their docstrings.
Which checks refer to a field is read from the spec's check modules (every ``SpecError`` whose
field is a constant names the function that raises it). ``docs/spec.md`` is :func:`spec_markdown`
(``make docs`` writes it, a unit test keeps it in sync); ``llm-rollout spec FIELD`` prints
:func:`describe` of one field; an unknown field in a spec gets :func:`closest` as its did-you-mean.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

_NOT_CHECKS = ("reference.py",)
"""Spec modules not read for checks (every other ``spec/*.py`` is: its ``SpecError`` raises name fields)."""


@dataclass(frozen=True)
class FieldDoc:
    """One field of the spec.

    Attributes:
        path: Dotted path from the top of the spec, e.g. ``validation.comparison.settle_s``.
        type: The type as written in a spec (``int``, ``"a" | "b"``, ``list[str]``, a section).
        default: The default as YAML would write it (``""`` for a required field).
        constraints: Bounds and patterns (``>= 0``, ``<= 60``), empty when none.
        doc: What it does, from the model's docstring.
        section: The model class when the field is itself a section, else None.
        checks: The check functions that refuse a value of it (``checks.check_spec`` ...).
    """

    path: str
    type: str
    default: str
    constraints: str
    doc: str
    section: type[BaseModel] | None
    checks: tuple[str, ...]


def _rst_to_md(text: str) -> str:
    """The docstring's reStructuredText roles and literals as Markdown."""
    text = re.sub(r":(?:class|mod|func|meth|data|attr):`~?([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`", text)
    return text.replace("``", "`")


def attributes(cls: type) -> tuple[str, dict[str, str]]:
    """Splits a Google-style class docstring into (description, {attribute: text})."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    head: list[str] = []
    attrs: dict[str, str] = {}
    current = None
    in_attrs = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            head.append(line)
            continue
        m = re.match(r"^    (\w+)(?: \(.*\))?: ?(.*)$", line)
        if m:
            current = m.group(1)
            attrs[current] = m.group(2).strip()
        elif line.startswith("        ") and current:
            attrs[current] += " " + line.strip()
        elif line.strip():
            in_attrs = False
            head.append(line)
    return _rst_to_md("\n".join(head).strip()), {k: _rst_to_md(v) for k, v in attrs.items()}


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The spec model inside an annotation (``X``, ``X | None``, ``dict[str, X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def type_name(annotation: Any) -> str:
    """An annotation as a spec author reads it."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (list, dict):
        inner = ", ".join(type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return annotation.__name__
        return {"str": "string", "NoneType": "null"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        import yaml

        plain = re.fullmatch(r"[\w./:~@-]+", value) and yaml.safe_load(value) == value
        return value if plain else json.dumps(value)
    return json.dumps(value)


def _default(info: Any) -> str:
    if info.default is not PydanticUndefined:
        return _yaml_value(info.default)
    if info.default_factory is not None:
        return _yaml_value(info.default_factory())
    return "(required)"


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _constraints(info: Any) -> str:
    parts = []
    for meta in info.metadata:
        for attr, op in _BOUNDS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{op} {value:g}" if isinstance(value, float) else f"{op} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    # Bounds on list items (Annotated[int, Field(ge=1, le=...)]).
    for arg in typing.get_args(info.annotation):
        if typing.get_origin(arg) is typing.Annotated:
            for meta in typing.get_args(arg)[1:]:
                for inner in getattr(meta, "metadata", [meta]):
                    for attr, op in _BOUNDS.items():
                        value = getattr(inner, attr, None)
                        if value is not None:
                            parts.append(f"each {op} {value}")
    return ", ".join(parts)


@cache
def _check_index() -> dict[str, tuple[str, ...]]:
    """``{field path: (module.function, ...)}`` for every ``SpecError`` raised with a constant field."""
    found: dict[str, set[str]] = {}
    folder = Path(__file__).resolve().parent
    for name in sorted(p.name for p in folder.glob("*.py") if p.name not in _NOT_CHECKS):
        tree = ast.parse((folder / name).read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            # A check taking the field as a parameter (check_model_uri(..., field="model.uri")).
            for arg, default in zip(
                reversed(func.args.args + func.args.kwonlyargs),
                reversed([*func.args.defaults, *[d for d in func.args.kw_defaults if d is not None]]),
                strict=False,
            ):
                if arg.arg == "field" and isinstance(default, ast.Constant) and isinstance(default.value, str):
                    found.setdefault(default.value, set()).add(f"{name.removesuffix('.py')}.{func.name}")
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "SpecError"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    field = re.sub(r"\[\d+\]$", "", node.args[0].value)
                    found.setdefault(field, set()).add(f"{name.removesuffix('.py')}.{func.name}")
    return {k: tuple(sorted(v)) for k, v in found.items()}


def _root() -> type[BaseModel]:
    from llm_rollout.spec import RolloutSpec

    return RolloutSpec


def fields(cls: type[BaseModel] | None = None, prefix: str = "") -> list[FieldDoc]:
    """Every field of ``cls`` (default: the whole spec), depth first, sections before their fields."""
    cls = cls or _root()
    _, docs = attributes(cls)
    checks = _check_index()
    out = []
    for name, info in cls.model_fields.items():
        path = f"{prefix}{name}"
        section = _section_of(info.annotation)
        out.append(
            FieldDoc(
                path=path,
                type=type_name(info.annotation),
                default=_default(info),
                constraints=_constraints(info),
                doc=docs.get(name, ""),
                section=section,
                checks=checks.get(path, ()),
            )
        )
        if section is not None:
            out.extend(fields(section, path + "."))
    return out


def field_names(loc: tuple[Any, ...]) -> list[str]:
    """The valid field names at ``loc`` (a pydantic error location): the siblings of its last part.

    Empty when ``loc`` passes through something that is not a spec section (a dict's keys).
    """
    cls: type[BaseModel] | None = _root()
    keyed = False  # the previous part was a dict of sections (runtime.secret_env): this part is a key
    for part in loc[:-1]:
        if keyed:
            keyed = False
            continue
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            return []
        annotation = cls.model_fields[part].annotation
        cls = _section_of(annotation)
        keyed = any(typing.get_origin(a) is dict for a in (annotation, *typing.get_args(annotation)))
    return list(cls.model_fields) if cls is not None else []


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate nearest to ``name`` by spelling, when one is near enough."""
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if match:
        return match[0]
    lower = {c.lower(): c for c in candidates}
    return lower.get(name.lower().replace("-", "_"))


def find(path: str) -> FieldDoc | None:
    """The field at a dotted ``path`` (``validation.comparison.settle_s``), or None."""
    return next((f for f in fields() if f.path == path), None)


def suggest(path: str) -> str | None:
    """The valid path nearest to an unknown one (the same prefix, the closest last part)."""
    all_paths = [f.path for f in fields()]
    parent, _, last = path.rpartition(".")
    siblings = [p.rpartition(".")[2] for p in all_paths if p.rpartition(".")[0] == parent]
    near = closest(last, siblings)
    if near:
        return f"{parent}.{near}" if parent else near
    # A field written at the wrong depth: the same name elsewhere, else the closest whole path.
    same = [p for p in all_paths if p.rpartition(".")[2] == last]
    if same:
        return same[0]
    match = difflib.get_close_matches(path, all_paths, n=1, cutoff=0.6)
    return match[0] if match else None


def describe(path: str) -> str:
    """What ``llm-rollout spec FIELD`` prints: the field's type, default, constraints, doc, checks.

    A section prints its own description and then its fields, one line each.

    Raises:
        SpecError: No such field (with the closest valid name).
    """
    from llm_rollout.errors import SpecError

    doc = find(path)
    if doc is None:
        near = suggest(path)
        raise SpecError(
            path or "FIELD",
            "is not a field of the spec",
            (f"did you mean '{near}'? " if near else "")
            + "`llm-rollout spec` lists every field, docs/spec.md explains them",
        )
    lines = [doc.path, f"  type:    {doc.type}", f"  default: {doc.default}"]
    if doc.constraints:
        lines.append(f"  allowed: {doc.constraints}")
    if doc.checks:
        lines.append(f"  checked: {', '.join(doc.checks)} (src/llm_rollout/spec/)")
    lines += ["", *_wrap(doc.doc)]
    if doc.section is not None:
        intro, _ = attributes(doc.section)
        lines += ["", *_wrap(intro), "", "fields:"]
        for child in fields(doc.section, doc.path + "."):
            if child.path.count(".") == doc.path.count(".") + 1:
                lines.append(f"  {child.path:<50} {child.type}  (default {child.default})")
    return "\n".join(lines).rstrip() + "\n"


def _wrap(text: str, width: int = 100) -> list[str]:
    import textwrap

    return [line for para in text.split("\n\n") for line in [*textwrap.wrap(para, width), ""]][:-1] or [""]


def index() -> str:
    """What ``llm-rollout spec`` prints without a field: every field, its type and default."""
    return "".join(f"{f.path:<58} {f.type}  (default {f.default})\n" for f in fields())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def spec_markdown() -> str:
    """``docs/spec.md``: every section and field of the spec, then the file formats it refers to."""
    root = _root()
    lines = [
        "# The rollout spec",
        "",
        "_Generated from the typed spec's own docstrings and types (`src/llm_rollout/spec/`) by `make docs`;"
        " do not edit by hand. `llm-rollout spec FIELD` prints one field._",
        "",
        *_INTRO,
        "",
        "## Contents",
        "",
    ]
    sections = [("(top level)", root, "")] + [(f.path, f.section, f.path + ".") for f in fields() if f.section]
    seen: dict[type, str] = {}
    for path, cls, _prefix in sections:
        if cls not in seen:
            seen[cls] = path
            lines.append(f"- [`{path}`](#{_anchor(path)}) ({cls.__name__})")
    lines += ["- [Correctness suite files](#correctness-suite-files)", "- [Workload files](#workload-files)"]
    lines += ["- [Reference texts](#reference-texts)", ""]
    shown: dict[type, str] = {}
    for path, cls, prefix in sections:
        intro, _ = attributes(cls)
        lines += [f"## {path}", ""]
        if cls in shown:
            lines += [f"Same fields as [`{shown[cls]}`](#{_anchor(shown[cls])}) ({cls.__name__}).", ""]
            continue
        shown[cls] = path
        lines += [intro, "", "| field | type | default | what it does |", "| --- | --- | --- | --- |"]
        for f in fields(cls, prefix):
            if f.path.count(".") != prefix.count("."):
                continue
            kind = f"`{_cell(f.type)}`" + (f" ({_cell(f.constraints)})" if f.constraints else "")
            text = f.doc + (f" Checked by: {', '.join(f'`{c}`' for c in f.checks)}." if f.checks else "")
            lines.append(f"| `{f.path}` | {kind} | `{_cell(f.default)}` | {_cell(text)} |")
        lines.append("")
    lines += _formats()
    return "\n".join(lines).rstrip() + "\n"


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", path.lower()).replace(" ", "-")


_INTRO = [
    "A spec is one YAML (or JSON) mapping describing a whole rollout. It reaches the steps three ways:",
    "",
    "- `llm-rollout run-local --spec FILE`, `render --spec FILE`, `validate --spec FILE`: a file on this machine;",
    "- `--set FIELD=VALUE` (run-local): one field by its dotted path; the value is parsed as YAML, so",
    "  `--set validation.load.concurrency=[1,4]` is a list, `--set canary.traffic_percent=10` a number and",
    "  `--set model.name=\"'007'\"` a string;",
    "- a KFP run: the pipeline parameter `spec`, the same document as JSON text"
    " (`spec_to_json` of a parsed spec; a YAML file must be sent as JSON).",
    "",
    "Every field has a default; an empty spec is the serving design's (a GPU service on KServe, the SLO of",
    "a GPU). Unknown fields are refused with the closest valid name, and every value is checked before",
    "anything is applied, naming the field and the fix. Paths in a spec (`validation.suite_file`,",
    "`validation.quality.texts`, `validation.load.workload.path`, `validation.api_key_file`,",
    "`validation.ca_bundle`) are read by the validate step: on this machine relative to the working",
    "directory; in a KFP run inside the step's pod, so they must be in the components' image (build it",
    "`FROM` ours with your files added) or on a volume mounted into the step. `sample:support-rag`",
    "names a workload shipped in the library. Examples: `examples/` (a CPU spec for this machine,",
    "a KServe team spec, a P/D spec, a scored suite, a workload).",
]


def _formats() -> list[str]:
    from llm_rollout.validation import probes, workload

    kinds = sorted(probes._PROBE_KEYS)
    return [
        "## Correctness suite files",
        "",
        "`validation.suite_file`: JSONL (`*.jsonl`, one probe a line) or a YAML/JSON list of probes (or",
        "`{probes: [...]}`). Each probe is sent greedy (temperature 0), not streamed, and judged on its",
        "completion alone (the prompt is not part of it):",
        "",
        "| key | meaning |",
        "| --- | --- |",
        "| `prompt` | the prompt (required; a user message when `chat`) |",
        f"| `max_tokens` | output tokens asked for (default {probes.DEFAULT_PROBE_MAX_TOKENS}) |",
        "| `exact` (or `expected`) | the whole completion equals this text (mind the leading space) |",
        "| `contains` | the completion contains this text (or each of a list) |",
        "| `regex` | Python `re.search` finds this pattern in the completion |",
        "| `json` | `true`: the completion, stripped, parses as JSON (plain decoding, no JSON mode) |",
        "| `finish_reason` | one of `stop`, `length` (or a list) |",
        "| `non_empty` | `true`: the completion has non-whitespace text |",
        "| `chat` | `true`: sent to `/v1/chat/completions` |",
        "| `must_pass` | `true`: a failure fails the gate on its own; otherwise the probe is *scored* |",
        "| `name` | shown in the report (default: file and position) |",
        f"| `{'`, `'.join(sorted(probes._META_KEYS))}`, `x-*` | ignored (notes) |",
        "",
        "A probe needs at least one expectation; any other key is refused (file, line, key and fix). Scored",
        "probes are a proportion: on a first rollout the share right must reach `validation.suite_min_score`;",
        "with a stable revision serving, both answer every probe and the candidate fails when it gets fewer",
        "right than the stable beyond chance (McNemar's exact test at `validation.comparison.confidence`).",
        "The built-in smoke suite (`validation.smoke_suite`) runs besides: full-length completion, greedy",
        "determinism, stream/non-stream agreement. Keys: " + ", ".join(f"`{k}`" for k in kinds) + ".",
        "",
        "```json",
        '{"name": "capital", "prompt": "The capital of France is", "exact": " Paris.", "max_tokens": 6,'
        ' "must_pass": true}',
        '{"name": "answer mentions Tokyo", "prompt": "The capital of Japan is", "contains": "Tokyo", "max_tokens": 6}',
        '{"name": "status JSON", "prompt": "Reply with a JSON object:", "json": true, "max_tokens": 32}',
        "```",
        "",
        "## Workload files",
        "",
        "`validation.load.workload: {dataset: custom, path: FILE}` (or the bare path, `workload: FILE`): JSONL,",
        "one request a line, read once before",
        f"the first request (at most {workload.MAX_REQUESTS:,} lines, {workload.MAX_FILE_BYTES // 2**20} MiB):",
        "",
        "| key | meaning |",
        "| --- | --- |",
        "| `prompt` | the prompt text (sent to `load.endpoint`) - or - |",
        '| `messages` | a chat conversation, a list of `{"role", "content"}` (sent to `/v1/chat/completions`) |',
        "| `max_tokens` (or `output_tokens`) | output tokens of this request (with `ignore_eos`) |",
        "| `timestamp` | optional: arrival in seconds from the start (times `time_scale`); on every line or none |",
        "",
        "With timestamps the file is replayed open loop at those times (level `replay`, the one judged);",
        "without, it feeds the concurrency levels in turn. `path: sample:support-rag` is the sample shipped",
        "in the library. The other datasets (`random`, `prefix_repetition`) generate prompts: see",
        "[`validation.load.workload`](#validationloadworkload).",
        "",
        "```json",
        '{"prompt": "Summarise: the order shipped on Monday ...", "max_tokens": 64, "timestamp": 0.0}',
        '{"messages": [{"role": "user", "content": "Where is my order?"}], "max_tokens": 48, "timestamp": 0.4}',
        "```",
        "",
        "## Reference texts",
        "",
        '`validation.quality.texts`: JSONL, one `{"text": ...}` a line: passages of the model\'s own domain',
        "(what it is meant to say well), scored by likelihood as bits per byte. See",
        "[`validation.quality`](#validationquality).",
    ]
