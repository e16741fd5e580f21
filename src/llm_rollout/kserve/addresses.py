"""Cluster addresses as the steps reach them: ``$LLM_ROLLOUT_ADDRESS_MAP``.

deploy-model records the addresses the cluster reports (``*.svc.cluster.local``, a gateway's host).
When the steps run outside the cluster (``llm-rollout run-local`` against a remote cluster, a
developer's laptop with ``kubectl port-forward``) those names do not resolve; the map rewrites
them to reachable ones. Every address a step uses goes through :func:`mapped`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from llm_rollout.errors import SpecError

ADDRESS_MAP_ENV = "LLM_ROLLOUT_ADDRESS_MAP"
"""Maps in-cluster addresses to reachable ones when the steps run outside the cluster.

Comma-separated ``HOST_PATTERN=URL`` pairs; the pattern is matched (shell-style wildcards) against
the host of each address deploy-model records, e.g.
``*.team-a.svc.cluster.local=http://127.0.0.1:8080`` for a ``kubectl port-forward``.
"""


def address_resolver(text: str | None = None) -> Callable[[str], str] | None:
    """The ``resolve_url`` function for deploy from ``$LLM_ROLLOUT_ADDRESS_MAP``.

    Args:
        text: The map (default: the environment variable).

    Returns:
        A function from a cluster address to the address to use, or None when no map is set.

    Raises:
        SpecError: A pair is not ``HOST_PATTERN=URL``.
    """
    raw = os.environ.get(ADDRESS_MAP_ENV, "") if text is None else text
    pairs = []
    for item in filter(None, (x.strip() for x in raw.split(","))):
        pattern, sep, target = item.partition("=")
        if not sep or not pattern or not target.startswith(("http://", "https://")):
            raise SpecError(
                ADDRESS_MAP_ENV,
                f"{item!r} is not HOST_PATTERN=URL",
                "write e.g. '*.svc.cluster.local=http://127.0.0.1:8080'",
            )
        pairs.append((pattern, target.rstrip("/")))
    if not pairs:
        return None

    def resolve(url: str) -> str:
        parts = urlsplit(url)
        for pattern, target in pairs:
            if fnmatch.fnmatch(parts.hostname or "", pattern):
                rest = parts.path.rstrip("/") + (f"?{parts.query}" if parts.query else "")
                return target + rest
        return url

    return resolve


def service_address(service: str, namespace: str, cluster_domain: str) -> str:
    """``http://<service>.<namespace>.svc.<cluster domain>``: a Service's in-cluster address (port 80)."""
    return f"http://{service}.{namespace}.svc.{cluster_domain}"


def service_of(url: str, namespace: str) -> str:
    """The Service of an in-cluster address in ``namespace`` (the inverse of :func:`service_address`):
    ``<service>`` for ``http://<service>.<namespace>.svc...``, "" for any other address."""
    service, _, rest = (urlsplit(url).hostname or "").partition(".")
    return service if service and rest.startswith(f"{namespace}.svc") else ""


def mapped(url: str) -> str:
    """``url`` through ``$LLM_ROLLOUT_ADDRESS_MAP`` (unchanged without a map)."""
    resolve = address_resolver()
    return resolve(url) if resolve else url
