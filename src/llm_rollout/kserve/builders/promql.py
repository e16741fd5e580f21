"""PromQL label matchers with the value escaped as a Prometheus string literal.

The KEDA triggers select vLLM's series by namespace, Service, model name and llm-d role. A model
name is the one value whose character set is wider than a Kubernetes name's, so every value is
written as a Prometheus double-quoted string literal: PromQL's lexer (``promql/parser/lex.go``
``lexString``) ends a string at an unescaped ``"`` and reads escapes as Go does
(``strconv.Unquote``), so ``\\`` and ``"`` are escaped and control characters written as
``\\n``/``\\xHH``. Without it a model name such as ``"}) or vector(1e9) #`` rewrote the query.
"""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal (what Go's ``strconv.Unquote`` reads back)."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def selector(**labels: str) -> str:
    """A label selector body ``name="value",...`` with every value escaped (:func:`promql_string`)."""
    return ",".join(f"{name}={promql_string(value)}" for name, value in labels.items())
