"""Runs the vLLM command line of KServe's well-known llm-d presets exactly as a pod would.

The presets pinned in ``../shared/reference/kserve/config/llmisvcconfig/`` start vLLM with a bash
script ending in ``eval "exec vllm serve ... ${VLLM_ADDITIONAL_ARGS} $@"``. Before the pod runs it,
KServe executes the merged spec as a Go ``text/template`` over its JSON encoding, with our
LLMInferenceService (plus ``GlobalConfig``) as the data (``pkg/controller/v1alpha2/llmisvc/
config_merge.go``, ``ReplaceVariables``). This module does the same two steps:

1. :func:`render_go_template` evaluates the template actions the presets use (field paths, ``if`` /
   ``else`` / ``end``, ``and``, ``or``, and the two functions ``kvTransferConfig`` and
   ``shutdownTimeout`` ported from ``ReplaceVariables``) over the JSON text of the script, with Go's
   trim markers (``{{-`` / ``-}}`` trim white space of the JSON text, where a newline is the two
   characters ``\\n``, not white space). Any other action raises: a new preset construct fails the
   test instead of being skipped.
2. :func:`run_preset` runs the rendered script with ``bash -c SCRIPT --`` (the preset's ``command``)
   and the container's environment, with a ``vllm`` probe first on ``PATH`` that answers
   ``--version`` with the pinned vLLM version and prints the argv of ``vllm serve`` as JSON.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.crds import KSERVE_REFERENCE, reference_dir
from tests.fast_yaml import YAML_LOADER

REFERENCE = reference_dir(KSERVE_REFERENCE) / "config" / "llmisvcconfig"

PRESETS = {
    # preset file: {role key in our object: path to the container list inside the preset spec}
    "config-llm-template.yaml": {"template": ("template",)},
    "config-llm-decode-template.yaml": {"template": ("template",)},
    "config-llm-prefill-template.yaml": {"prefill.template": ("prefill", "template")},
    "config-llm-worker-data-parallel.yaml": {"template": ("template",), "worker": ("worker",)},
    "config-llm-decode-worker-data-parallel.yaml": {"template": ("template",), "worker": ("worker",)},
    "config-llm-prefill-worker-data-parallel.yaml": {
        "prefill.template": ("prefill", "template"),
        "prefill.worker": ("prefill", "worker"),
    },
}
"""Every preset with a vLLM command line, and where its ``main`` containers sit."""

# Go field names of the template data -> JSON names in the object (the CRD's field names).
_GO_TO_JSON = {
    "ObjectMeta": "metadata",
    "Spec": "spec",
    "Model": "model",
    "Name": "name",
    "Namespace": "namespace",
    "Parallelism": "parallelism",
    "Tensor": "tensor",
    "Data": "data",
    "DataLocal": "dataLocal",
    "DataRPCPort": "dataRPCPort",
    "Expert": "expert",
    "Prefill": "prefill",
    "Template": "template",
    "Worker": "worker",
    "KVCacheOffloading": "kvCacheOffloading",
}


class TemplateError(Exception):
    """A template construct this port does not know, or a nil pointer Go would fail on too."""


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _lookup(data: dict[str, Any], path: str) -> Any:
    if path == "nil":
        return None
    if not path.startswith("."):
        raise TemplateError(f"unknown operand {path!r}")
    node: Any = data
    parts = path[1:].split(".")
    for i, part in enumerate(parts):
        if node is None:  # Go: "nil pointer evaluating ..."
            raise TemplateError(f"nil pointer evaluating {'.'.join(parts[:i])} in {path}")
        if part == "GlobalConfig":
            node = data["GlobalConfig"]
            continue
        if isinstance(node, dict) and "__go__" in node:
            node = node[part]
            continue
        key = _GO_TO_JSON.get(part)
        if key is None:
            raise TemplateError(f"field {part!r} of {path} is not mapped to a JSON name")
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "", {}, [])


def _shutdown_timeout(spec: Any, pre_stop: int) -> int:
    """``shutdownTimeout`` of ``ReplaceVariables``: max(0, tgps - preStop - min(5, tgps)), tgps 60 when unset."""
    tgps = 60
    if isinstance(spec, dict) and spec.get("terminationGracePeriodSeconds") is not None:
        tgps = int(spec["terminationGracePeriodSeconds"])
    return max(0, tgps - pre_stop - min(5, tgps))


def _kv_transfer_config(spec: Any) -> str:
    """``kvTransferConfig`` of ``ReplaceVariables``; our objects never set kvCacheOffloading."""
    if spec is None:
        return ""
    raise TemplateError("kvCacheOffloading is set; port the rest of kvTransferConfig first")


def _evaluate(expr: str, data: dict[str, Any]) -> Any:
    words = expr.split()
    head, args = words[0], words[1:]
    if head == "and":
        value: Any = None
        for word in args:
            value = _lookup(data, word)
            if not _truth(value):
                return value
        return value
    if head == "or":
        for word in args:
            value = _lookup(data, word) if not word.isdigit() else int(word)
            if _truth(value):
                return value
        return value
    if head == "shutdownTimeout" and len(args) == 2:
        return _shutdown_timeout(_lookup(data, args[0]), int(args[1]))
    if head == "kvTransferConfig" and len(args) == 1:
        return _kv_transfer_config(_lookup(data, args[0]))
    if len(words) == 1:
        return _lookup(data, head)
    raise TemplateError(f"unknown template action {{{{ {expr} }}}}")


def _print(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_go_template(text: str, data: dict[str, Any]) -> str:
    """Executes the Go template ``text`` over ``data`` (the subset of text/template the presets use)."""
    pieces: list[tuple[str, str]] = []  # ("text", s) or ("action", expr)
    pos = 0
    for m in _ACTION.finditer(text):
        before = text[pos : m.start()]
        if m.group(1):
            before = before.rstrip(" \t\r\n")
        if pieces and pieces[-1][0] == "trim-next":
            pieces.pop()
            before = before.lstrip(" \t\r\n")
        pieces.append(("text", before))
        pieces.append(("action", m.group(2)))
        if m.group(3):
            pieces.append(("trim-next", ""))
        pos = m.end()
    tail = text[pos:]
    if pieces and pieces[-1][0] == "trim-next":
        pieces.pop()
        tail = tail.lstrip(" \t\r\n")
    pieces.append(("text", tail))

    out: list[str] = []
    # A stack of (emitting in the enclosing block, this branch taken, some branch taken).
    stack: list[tuple[bool, bool, bool]] = []
    emitting = True
    for kind, value in pieces:
        if kind == "text":
            if emitting:
                out.append(value)
            continue
        if value.startswith("if "):
            cond = _truth(_evaluate(value[3:], data)) if emitting else False
            stack.append((emitting, cond, cond))
            emitting = emitting and cond
        elif value == "else":
            if not stack:
                raise TemplateError("else without if")
            outer, _, taken = stack[-1]
            stack[-1] = (outer, not taken, True)
            emitting = outer and not taken
        elif value == "end":
            if not stack:
                raise TemplateError("end without if")
            emitting = stack.pop()[0]
        elif emitting:
            out.append(_print(_evaluate(value, data)))
    if stack:
        raise TemplateError("if without end")
    return "".join(out)


@functools.cache
def _preset_doc(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    """A preset file parsed once per process (keyed by path, mtime and size: an edited file is read again)."""
    return yaml.load(path.read_text(), Loader=YAML_LOADER)


def preset_containers(preset: str) -> dict[str, dict[str, Any]]:
    """The ``main`` container of each role of a pinned preset file, by role key (a fresh copy each call)."""
    path = REFERENCE / preset
    st = path.stat()
    doc = copy.deepcopy(_preset_doc(path, st.st_mtime_ns, st.st_size))
    found = {}
    for role, path in PRESETS[preset].items():
        node = doc["spec"]
        for key in path:
            node = node[key]
        (main,) = [c for c in node["containers"] if c["name"] == "main"]
        found[role] = main
    return found


def rendered_command(preset_main: dict[str, Any], llmisvc: dict[str, Any], *, enable_tls: bool = False) -> list[str]:
    """The preset container's ``command`` after KServe's template step, for our object.

    Like ``ReplaceVariables`` the template runs over the JSON text of the value, and the result is
    decoded again.
    """
    data = {**llmisvc, "GlobalConfig": {"__go__": True, "EnableTLS": enable_tls}}
    return [json.loads(render_go_template(json.dumps(part), data)) for part in preset_main["command"]]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The plain-value environment of one of our containers (valueFrom entries are the kubelet's)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


_PROBE = """#!/usr/bin/env python3
import json, sys
if sys.argv[1:] == ["--version"]:
    print({version!r})
    sys.exit(0)
print("PROBE_ARGV " + json.dumps(sys.argv[1:]), flush=True)
"""


def run_preset(command: list[str], env: dict[str, str], workdir: Path, *, vllm_version: str) -> list[str]:
    """Runs a rendered preset command with ``env``; returns the argv it gave ``vllm`` (after ``vllm``).

    The probe ``vllm`` answers ``--version`` with ``vllm_version`` (the version-dependent branches of
    the preset then take the pinned version's path) and prints the ``serve`` argv.
    """
    bindir = workdir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    probe = bindir / "vllm"
    probe.write_text(_PROBE.format(version=vllm_version))
    probe.chmod(probe.stat().st_mode | stat.S_IXUSR)
    full_env = {
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(workdir),
        # the data-parallel worker presets resolve the leader's address (getent hosts) first
        "LWS_LEADER_ADDRESS": "localhost",
        "LWS_WORKER_INDEX": "1",
        "DP_ADDRESS_RESOLVE_ATTEMPTS": "1",
        **env,
    }
    proc = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=60, cwd=workdir)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE_ARGV ")]
    if proc.returncode != 0 or len(lines) != 1:
        raise AssertionError(f"the preset command failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[0].split(" ", 1)[1])


# Cases: every preset role, with the spec whose member KServe would merge it into -------------

TRICKY_EXTRA_ARGS = [
    # JSON with spaces and nested braces, shell specials ($, *, {a,b}, ', ;, `), a separate value
    '--override-generation-config={"temperature": 0.5, "stop": ["$HOME", "*", "{a,b}", "it\'s; `x`"]}',
    "--chat-template-content-format",
    "string",
]
"""Extra vLLM arguments that an unquoted ``eval`` would mangle (each in its own way)."""

_PD = {"prefill": {"replicas": 1, "tensor": 1}, "scheduler": {"profile": "pd"}}
_MULTI_NODE = {"nodes": 2, "data": 2, "data_local": 1}

CASE_SPECS: dict[str, dict[str, Any]] = {
    "config-llm-template.yaml": {},
    "config-llm-decode-template.yaml": _PD,
    "config-llm-prefill-template.yaml": _PD,
    "config-llm-worker-data-parallel.yaml": {"decode": _MULTI_NODE},
    "config-llm-decode-worker-data-parallel.yaml": {**_PD, "decode": _MULTI_NODE},
    "config-llm-prefill-worker-data-parallel.yaml": {
        **_PD,
        "decode": {"tensor": 1},
        "prefill": {"replicas": 1, "tensor": 1, **_MULTI_NODE},
    },
}
"""The ``llmd`` section of the spec whose member each preset is merged into."""


def case_spec(preset: str, extra_args: list[str] | None = None) -> dict[str, Any]:
    """The spec document for ``preset``'s case."""
    return {
        "platform": "kserve",
        "runtime": {"extra_args": list(TRICKY_EXTRA_ARGS if extra_args is None else extra_args)},
        "llmd": {"enabled": True, **CASE_SPECS[preset]},
    }


def our_container(llmisvc: dict[str, Any], role: str) -> dict[str, Any]:
    """Our ``main`` container at a preset role key (``template``, ``worker``, ``prefill.template`` ...)."""
    node = llmisvc["spec"]
    for key in role.split("."):
        node = node[key]
    return node["containers"][0]
