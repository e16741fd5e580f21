"""Checks rendered objects against the real KServe CRD schemas (structural OpenAPI v3).

A stand-in for the API server's own validation in the unit tier: types, enums, required fields,
bounds, patterns and - most important - unknown fields, which the server would silently prune.
CEL rules (x-kubernetes-validations) are left to the real API server in the cluster tier.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

from tests.fast_yaml import YAML_LOADER

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The shared/ folder beside the checkout (or $LLM_ROLLOUT_SHARED): :func:`tests.crds.shared_dir`."""
    from tests.crds import shared_dir as _shared_dir

    return _shared_dir()


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): openAPIV3Schema}`` for every served version of the KServe CRDs (:mod:`tests.crds`)."""
    from tests.crds import KSERVE, crd_paths

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in crd_paths(KSERVE):
        crd = yaml.load(path.read_text(), Loader=YAML_LOADER)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: expected int or string, got {type(value).__name__}")
        return
    typ = schema.get("type")
    if typ:
        expected = _TYPES[typ]
        if isinstance(value, bool) and typ in ("integer", "number"):
            errors.append(f"{path}: expected {typ}, got boolean")
            return
        if not isinstance(value, expected):
            errors.append(f"{path}: expected {typ}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            if "items" in schema:
                _check(item, schema["items"], f"{path}[{i}]", errors)
    if isinstance(value, dict):
        props = schema.get("properties")
        for req in schema.get("required", []):
            if req not in value:
                errors.append(f"{path}: missing required field {req!r}")
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if props is not None and key in props:
                _check(item, props[key], sub, errors)
            elif isinstance(schema.get("additionalProperties"), dict):
                _check(item, schema["additionalProperties"], sub, errors)
            elif schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("additionalProperties") is True:
                continue
            elif props is not None or typ == "object":
                errors.append(f"{sub}: unknown field (the API server would prune it)")


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of ``obj`` against its CRD; empty when it conforms.

    Raises:
        KeyError: When no served CRD version matches the object's apiVersion and kind.
    """
    schema = crd_schemas()[(obj["apiVersion"], obj["kind"])]
    errors: list[str] = []
    # metadata is validated by the server's ObjectMeta, not the CRD schema.
    body = {k: v for k, v in obj.items() if k != "metadata"}
    _check(
        body, {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "metadata"}}, "", errors
    )
    return errors
