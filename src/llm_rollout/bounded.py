"""Bounded reads of user files and documents (issue 31).

Every file a user names (the spec, a workload, a calibration set, a correctness suite) is read
through :func:`read_regular_file`: a regular file only (a device, FIFO or ``/proc`` file reports a
size of 0 and never ends), at most a stated number of bytes, counted while reading rather than
trusted from ``st_size``. YAML is parsed by :func:`load_yaml`, which refuses aliases before they
are expanded (a few hundred bytes of nested aliases expand to gigabytes) and nesting deeper than
:data:`MAX_DEPTH`; JSON by :func:`loads_json`, whose nesting limit is a SpecError too.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from llm_rollout.errors import SpecError

MAX_DEPTH = 64
"""Deepest nesting a spec, suite or workload document may have (a spec needs 5)."""
SPEC_FILE_LIMIT = 4 * 1024 * 1024
"""Bytes a spec file may have."""


def read_regular_file(path: str | Path, field: str, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Args:
        path: The file (``~`` is expanded).
        field: Spec field or flag that named it, for messages.
        limit: Most bytes accepted.
        what: What the file is, for messages.

    Raises:
        SpecError: Not found, not a regular file, unreadable, or larger than ``limit``.
    """
    p = Path(path).expanduser()
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise SpecError(field, f"cannot read {str(p)[:200]}: {err.strerror}", f"check the path of the {what}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(
                field,
                f"{str(p)[:200]} is not a regular file (a device, pipe, directory or /proc entry)",
                f"give the path of a regular {what} file",
            )
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise SpecError(
                    field,
                    f"{str(p)[:200]} is larger than {limit // (1024 * 1024) or 1} MiB, the most a {what} may have",
                    f"give a smaller {what}",
                )
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise SpecError(field, f"cannot read {str(p)[:200]}: {err.strerror}", f"check the {what}") from None
    finally:
        os.close(fd)


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with a depth limit, both refused before expansion."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused(f"line {mark.line + 1}: YAML aliases ('*name', '<<: *name') are not accepted")
        depth = getattr(self, "_depth", 0) + 1
        if depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise _Refused(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1


class _Refused(Exception):
    pass


def load_yaml(text: str | bytes, field: str, source: str = "the document") -> Any:
    """Parses YAML (or JSON) safely: no aliases, at most :data:`MAX_DEPTH` deep.

    Raises:
        SpecError: Not YAML, an alias, or too deep; the message quotes no more than the position.
    """
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except _Refused as err:
        raise SpecError(field, f"{source}: {err}", "write each value out in full, and nest less deeply") from None
    except yaml.YAMLError as err:
        problem = str(err)
        raise SpecError(field, f"{source} is not valid YAML/JSON: {problem[:300]}", "fix the syntax") from None
    except RecursionError:
        raise SpecError(field, f"{source} is nested too deeply", f"nest at most {MAX_DEPTH} levels") from None


def loads_json(text: str | bytes, field: str, source: str = "the document") -> Any:
    """``json.loads`` whose failures (syntax, nesting too deep) are SpecErrors naming ``field``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise SpecError(field, f"{source} is nested too deeply", f"nest at most {MAX_DEPTH} levels") from None
    except ValueError as err:
        raise SpecError(field, f"is not JSON ({str(err)[:200]})", f"pass {source} as JSON (an object)") from None
    if depth(value) > MAX_DEPTH:
        raise SpecError(field, f"{source} is nested deeper than {MAX_DEPTH} levels", "nest less deeply")
    return value


def depth(value: Any) -> int:
    """Nesting depth of a parsed document (a scalar is 0), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, level + 1) for v in item)
    return deepest
