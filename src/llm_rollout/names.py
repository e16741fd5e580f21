"""Deterministic, DNS-1123-safe object names.

KServe and llm-d derive child object names from ours (``<name>-predictor``; for an
LLMInferenceService ``<name>-kserve``, ``<name>-kserve-prefill``, ``<name>-kserve-workload-svc``,
``<name>-inference-pool``, ``<name>-epp-service`` ..., see :data:`LLMD_CHILD_SUFFIXES`), and a
Service name may not exceed 63 characters. We therefore cap our own names at :data:`MAX_NAME_LEN` characters and, when a
name has to be shortened, replace the tail with a short hash of the full name so that two long
names never collapse onto the same short one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from llm_rollout.errors import SpecError

MAX_NAME_LEN = 40
"""Longest name we give an object: leaves room for the suffixes the controllers append."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def short_hash(text: str, length: int = 6) -> str:
    """Returns a short, stable, lowercase hex digest of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def revision_id(model_uri: str, digest: str | None = None) -> str:
    """The default revision id of a model: ``r`` + a short hash of its storage URI and digest.

    The one rule for it: deploy-model derives the id of a revision whose spec names none with it,
    and ``llm-rollout render`` the ids it shows, so both give a model the same predictor and member name.
    """
    return "r" + short_hash(model_uri + (digest or ""), 8)


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


LLMD_CHILD_SUFFIXES = (
    "-kserve",
    "-kserve-prefill",
    "-kserve-workload-svc",
    "-kserve-route",
    "-kserve-router-scheduler",
    "-kserve-self-signed-certs",
    "-kserve-role",
    "-kserve-rb",
    "-inference-pool",
    "-epp-service",
    "-epp-sa",
    "-epp-role",
    "-epp-rb",
)
"""What KServe's llm-d controller appends to an LLMInferenceService's name, always through
``kmeta.ChildName`` (``pkg/controller/v1alpha2/llmisvc/``: ``workload_single_node.go``
``mainDeploymentName`` ``-kserve`` / ``prefillDeploymentName`` ``-kserve-prefill`` / the
``-kserve`` service account, role and binding; ``router.go`` ``-kserve-route`` and the workload
Service ``-kserve-workload-svc``; ``scheduler.go`` ``-inference-pool``, ``-epp-sa``, ``-epp-role``,
``-epp-rb``, ``schedulerDeploymentName`` ``-kserve-router-scheduler``; the presets
``config-llm-scheduler.yaml`` ``-epp-service`` and ``config-llm-*template.yaml``
``-kserve-self-signed-certs``)."""

LLMD_MEMBER_MAX_LEN = 63 - max(len(s) for s in LLMD_CHILD_SUFFIXES)
"""Longest llm-d member name (38): every child keeps the plain ``<member><suffix>`` form.

``kmeta.ChildName`` would hash a longer parent into an unreadable ``<head><md5>suffix``; at 38 or
less every child name above is exactly ``<member><suffix>``, which is what a user looks for."""


def child_name(parent: str, suffix: str) -> str:
    """knative.dev/pkg ``kmeta.ChildName``: ``parent + suffix``, hashed to fit 63 characters.

    Ported because KServe names every llm-d child with it: when ``parent + suffix`` is longer
    than 63, the parent is cut and followed by the md5 of the whole parent (or, for a suffix of
    31 characters or more, of parent and suffix together).
    """
    longest, head = 63, 63 - 32
    if len(parent) <= longest - len(suffix):
        return parent + suffix
    if head - len(suffix) <= 0:
        digest = hashlib.md5((parent + suffix).encode()).hexdigest()
        out = parent[:head] + digest
        if (room := longest - len(out)) > 0:
            out += suffix[:room]
        return out.rstrip("-")
    return parent[: head - len(suffix)] + hashlib.md5(parent.encode()).hexdigest() + suffix


def llmd_children(member: str, suffixes: Iterable[str] = LLMD_CHILD_SUFFIXES) -> dict[str, str]:
    """The names KServe's llm-d controller gives the children of LLMInferenceService ``member``."""
    return {suffix: child_name(member, suffix) for suffix in suffixes}


def member_name(service: str, revision: str) -> str:
    """Name of one llm-d member (an LLMInferenceService): ``<service>-<hash of revision>``.

    At most :data:`LLMD_MEMBER_MAX_LEN` (38) characters, so the controller's children
    (:data:`LLMD_CHILD_SUFFIXES`) keep plain names. A service name of up to 29 characters is kept
    whole; a longer one is cut and followed by a hash of the *whole* service name, so two services
    sharing a long prefix (``lean-rag-inference-team-alpha1`` and ``...-alpha1-eu``) never get the
    same member name for the same revision.

    Args:
        service: The (already safe) service name.
        revision: Any revision identifier (artifact digest, run id, model URI).

    Returns:
        A DNS-1123 label, stable for the same ``(service, revision)`` pair and unique across services.
    """
    rev = short_hash(revision, 8)
    if len(service) + 1 + len(rev) <= LLMD_MEMBER_MAX_LEN:
        return f"{service}-{rev}"
    svc = short_hash(service, 6)
    head = service[: LLMD_MEMBER_MAX_LEN - len(svc) - len(rev) - 2].rstrip("-")
    return f"{head}-{svc}-{rev}"


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
