"""Deterministic, DNS-1123-safe object names.

KServe and llm-d derive child object names from ours (``<name>-predictor``,
``<name>-kserve-workload-prefill``, ``<name>-epp-sa`` ...), and a Service name may not exceed
63 characters. We therefore cap our own names at :data:`MAX_NAME_LEN` characters and, when a
name has to be shortened, replace the tail with a short hash of the full name so that two long
names never collapse onto the same short one.
"""

from __future__ import annotations

import hashlib
import re

from llm_rollout.errors import SpecError

MAX_NAME_LEN = 40
"""Longest name we give an object: leaves room for the suffixes the controllers append."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def short_hash(text: str, length: int = 6) -> str:
    """Returns a short, stable, lowercase hex digest of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def is_dns_label(name: str, max_len: int = 63) -> bool:
    """Tells whether ``name`` is a valid DNS-1123 label no longer than ``max_len``."""
    return len(name) <= max_len and bool(_DNS_LABEL.match(name))


def dns_name(raw: str, *, field: str = "name", max_len: int = MAX_NAME_LEN) -> str:
    """Turns ``raw`` into a DNS-1123 label of at most ``max_len`` characters, deterministically.

    Lowercases, maps every run of characters outside ``[a-z0-9]`` to one ``-`` and trims dashes.
    If the result is too long, it is cut and suffixed with ``-<hash of raw>``.

    Args:
        raw: The requested name (a model name, a service name, a revision id ...).
        field: The spec field the name came from, for the error message.
        max_len: The cap; defaults to :data:`MAX_NAME_LEN`.

    Returns:
        The safe name; equal to ``raw`` when ``raw`` already is one.

    Raises:
        SpecError: When nothing usable is left (e.g. the name has no letter or digit) or the
            name does not start with a letter, as Kubernetes Service names must.
    """
    if not isinstance(raw, str):
        raise SpecError(field, f"expected a string, got {type(raw).__name__}", "give a name such as 'my-model'")
    name = re.sub(r"[^a-z0-9]+", "-", raw.strip().lower()).strip("-")
    if not name:
        raise SpecError(
            field,
            f"{raw!r} has no letters or digits, so no DNS-1123 name can be made from it",
            "use lowercase letters, digits and '-', starting with a letter, e.g. 'my-model'",
        )
    if not name[0].isalpha():
        raise SpecError(
            field,
            f"{raw!r} does not start with a letter (Kubernetes Service names must)",
            f"prefix it with a letter, e.g. 'm-{name}'",
        )
    if len(name) > max_len:
        suffix = short_hash(raw)
        name = name[: max_len - len(suffix) - 1].rstrip("-") + "-" + suffix
    return name


def member_name(service: str, revision: str) -> str:
    """Name of a revision-specific object: ``<service>-<short revision id>``, within the cap.

    Args:
        service: The (already safe) service name.
        revision: Any revision identifier (artifact digest, run id, model URI).

    Returns:
        A DNS-safe name that is stable for the same ``(service, revision)`` pair.
    """
    suffix = short_hash(revision, 8)
    head = service[: MAX_NAME_LEN - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


ISVC_MEMBER_MAX_LEN = 12
"""Longest InferenceService predictor name we give: ``<service (<= 40)>-<name>-predictor`` <= 63."""

_SHORT_MEMBER = re.compile(r"^[a-z]([-a-z0-9]{0,10}[a-z0-9])?$")  # at most ISVC_MEMBER_MAX_LEN


def isvc_member_name(revision: str) -> str:
    """Short predictor name of one InferenceService revision (what upstream's canary e2e calls ``v2``).

    KServe names a named predictor's Deployment and Service ``<isvc>-<name>-predictor``
    (``pkg/constants/constants.go`` ``PredictorServiceName``); a Kubernetes Service name stops at
    63 characters, so with a service name of up to :data:`MAX_NAME_LEN` (40) the predictor name
    may have at most :data:`ISVC_MEMBER_MAX_LEN` (12). A revision id that already is such a name
    (the default ``r`` + 8 hex digits) is used as it is, anything else becomes ``r`` + a hash of it.

    Args:
        revision: The revision id.

    Returns:
        A DNS-1123 label of at most 12 characters, stable for the same revision.
    """
    if _SHORT_MEMBER.match(revision):
        return revision
    return "r" + short_hash(revision, 8)


def predictor_service_name(isvc: str, predictor: str = "") -> str:
    """The Deployment/Service name KServe gives a predictor.

    Mirrors ``pkg/constants/constants.go`` ``PredictorServiceName``: ``<isvc>-predictor`` for an
    unnamed predictor, ``<isvc>-<predictor>-predictor`` for a named one (a canary, or a stable
    predictor after a promotion).
    """
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"
