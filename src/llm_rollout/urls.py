"""URLs as they may be shown, and whose origin a credential may go to (issue 31).

A URL a user gives may carry credentials (``http://user:pass@host/``); :func:`redact_url` removes
them before the URL is logged, reported or written to a results file. :func:`same_origin` is the
rule for the API key: it goes to the endpoint's own origin (scheme, host and port, as browsers and
RFC 6454 define an origin) and to no other unless a spec field allows it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def redact_url(url: str) -> str:
    """``url`` without the ``user:password@`` part (any text: a URL that cannot be parsed is cleaned too)."""
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub("***@", url)
    if parts.username is None and parts.password is None:
        return _USERINFO.sub("***@", url) if "@" in url.split("?", 1)[0] else url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with the credentials of every URL in it removed (for error messages that quote URLs)."""
    return _USERINFO.sub("***@", text) if isinstance(text, str) and "@" in text else text


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port filled in for http and https."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port."""
    return origin(a) == origin(b)


def redact_tree(value: Any) -> Any:
    """A copy of plain JSON data with :func:`redact_text` applied to every string (results files, reports)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value
