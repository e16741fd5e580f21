"""The client: server-side apply, reads, deletes and watches of the objects the library manages.

Everything the library does to a cluster goes through :class:`KubeClient`:

* **Writes are server-side apply only** (``PATCH`` with ``application/apply-patch+yaml``), with one
  field manager (``llm-rollout``) and ``fieldValidation=Strict``, so a typo'd field is rejected by
  the server instead of being silently pruned, a rerun with the same object changes nothing, and a
  field someone else owns is reported as a conflict instead of being overwritten. ``dry_run=True``
  sends ``dryRun=All`` (the "plan" mode): the server validates and defaults, nothing is stored.
* **Errors are mapped once** (:mod:`llm_rollout.kube.errors`) and every public call runs under
  :func:`~llm_rollout.kube.retry.retry`, which retries the transient ones within a deadline.

It needs only the ``kubernetes`` client (for configuration, authentication and its connection
pool) and urllib3; no kfp.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from llm_rollout.errors import PermanentError
from llm_rollout.kube.errors import (
    FIELD_MANAGER,
    ApiTransientError,
    NotFoundError,
    ResourceTypeNotServed,
    Target,
    map_error,
)
from llm_rollout.kube.resources import Resource, resource_for
from llm_rollout.kube.retry import retry
from llm_rollout.kube.watch import WatchStream

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_RETRY_DEADLINE_S = 60.0

T = TypeVar("T")


class KubeClient:
    """A small, exact client for the objects the library manages.

    Build it with :meth:`from_kubeconfig`, :meth:`in_cluster`, :meth:`from_environment`, or from an
    existing :class:`kubernetes.client.ApiClient`. All calls retry transient errors within
    ``retry_deadline_s`` (per call); pass ``deadline_s`` to a call to override.

    Args:
        api_client: A configured kubernetes ApiClient (host, credentials, TLS).
        field_manager: The server-side apply field manager.
        request_timeout_s: Per-request timeout (connect and read).
        retry_deadline_s: Default time budget of one call including its retries.
        type_grace_s: How long a "resource type not served" 404 is retried (an API server that just
            restarted serves custom resources only after its CRD informers synced). The CRD
            preflight (:func:`llm_rollout.kserve.crds.check_crds`) reports truly missing CRDs without
            this delay.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
        type_grace_s: float = 15.0,
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.request_timeout_s = request_timeout_s
        self.retry_deadline_s = retry_deadline_s
        self.type_grace_s = type_grace_s

    # Construction ------------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None, **kwargs: Any) -> KubeClient:
        """A client from a kubeconfig file (``$KUBECONFIG`` or ``~/.kube/config`` when ``path`` is None).

        Args:
            path: The kubeconfig file.
            context: The context to use; the file's current context when None.
            **kwargs: Passed to :class:`KubeClient`.

        Raises:
            PermanentError: When the kubeconfig cannot be loaded.
        """
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        except (k8s_config.ConfigException, OSError, TypeError, ValueError) as err:
            raise PermanentError(
                f"cannot load kubeconfig {path or '(default)'}: {err}. Fix: point KUBECONFIG at a valid file"
            ) from None
        return cls(k8s_client.ApiClient(configuration), **kwargs)

    @classmethod
    def in_cluster(cls, **kwargs: Any) -> KubeClient:
        """A client from the pod's service account (in-cluster configuration).

        Raises:
            PermanentError: When not running in a pod with a mounted service account token.
        """
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException as err:
            raise PermanentError(
                f"no in-cluster configuration: {err}. Fix: run inside a pod with a service account, "
                "or give a kubeconfig"
            ) from None
        return cls(k8s_client.ApiClient(configuration), **kwargs)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeClient:
        """In-cluster configuration inside a pod, else the kubeconfig.

        Args:
            kubeconfig: A kubeconfig file; when given it wins over the in-cluster configuration.
            **kwargs: Passed to :class:`KubeClient`.
        """
        import os

        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(**kwargs)
        return cls.from_kubeconfig(kubeconfig, **kwargs)

    def without_type_grace(self) -> KubeClient:
        """The same client (connection, settings) but a "type not served" 404 fails at once."""
        twin = copy.copy(self)
        twin.type_grace_s = 0.0
        return twin

    # Low level ---------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = None,
    ) -> Any:
        """One HTTP request; returns the urllib3 response (errors are raised unmapped)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        return self.api_client.call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout if timeout is not None else self.request_timeout_s,
        )

    def _call_json(self, method: str, path: str, target: Target, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = self._send(method, path, **kwargs)
            try:
                data = resp.data
            finally:
                with contextlib.suppress(Exception):
                    resp.release_conn()
        except BaseException as err:  # mapped once, re-raised
            mapped = map_error(err, target)
            if mapped is err:
                raise
            raise mapped from err
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError as err:
            raise ApiTransientError(f"{target.verb} {target.describe()}: unreadable response body: {err}") from None

    def _retrying(self, what: str, fn: Callable[[], T], deadline_s: float | None) -> T:
        first_seen: list[float] = []

        def guarded() -> T:
            try:
                return fn()
            except ResourceTypeNotServed as err:
                now = time.monotonic()
                first_seen.append(now)
                if now - first_seen[0] < self.type_grace_s:
                    raise ApiTransientError(f"{err} (retrying: the API server may still be starting)") from err
                raise

        return retry(guarded, deadline_s=self.retry_deadline_s if deadline_s is None else deadline_s, what=what)

    # Public API --------------------------------------------------------------------------------

    def apply(
        self, obj: dict[str, Any], *, dry_run: bool = False, force: bool = False, deadline_s: float | None = None
    ) -> dict[str, Any]:
        """Server-side applies ``obj`` and returns the object as the server has it.

        One field manager (``llm-rollout``), ``fieldValidation=Strict``. Applying the same object
        twice changes nothing the second time (same resourceVersion, generation and managedFields).

        Args:
            obj: The full desired object (``apiVersion``, ``kind``, ``metadata.name`` ...).
            dry_run: Send ``dryRun=All``: validated and defaulted by the server, not stored.
            force: Take over fields another field manager owns (``force=true``); off unless the user
                asked for it.
            deadline_s: Retry budget for transient errors; the client's default when None.

        Returns:
            The object after the apply (for a dry run: what it would be).

        Raises:
            ConflictError: Another field manager owns a field with a different value (and not
                ``force``); the message names the manager and the fields.
            InvalidError: The server rejected a field (unknown field, wrong type, CEL rule).
            NotFoundError: The resource type is not served (CRD missing).
            DeadlineExceeded: Transient errors persisted past the deadline.
        """
        res = resource_for(obj)
        meta = obj.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace") if res.namespaced else None
        if not name:
            raise PermanentError(f"{res.kind} has no metadata.name; cannot apply it")
        if res.namespaced and not namespace:
            raise PermanentError(f"{res.kind} {name} has no metadata.namespace; cannot apply it")
        query: list[tuple[str, Any]] = [("fieldManager", self.field_manager), ("fieldValidation", "Strict")]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        target = Target("apply", res.kind, name, namespace, res.plural)
        path = res.path(namespace, name)

        def once() -> dict[str, Any]:
            return self._call_json("PATCH", path, target, query=query, body=obj, content_type=APPLY_CONTENT_TYPE)

        result = self._retrying(f"apply {target.describe()}", once, deadline_s)
        log.debug(
            "applied %s (resourceVersion %s)", target.describe(), (result.get("metadata") or {}).get("resourceVersion")
        )
        return result

    def get(
        self, res: Resource, name: str, namespace: str | None = None, *, deadline_s: float | None = None
    ) -> dict[str, Any]:
        """Reads one object.

        Args:
            res: The resource.
            name: Object name.
            namespace: Namespace (ignored for cluster-scoped resources).
            deadline_s: Retry budget for transient errors.

        Returns:
            The object.

        Raises:
            NotFoundError: When it does not exist.
        """
        ns = namespace if res.namespaced else None
        target = Target("get", res.kind, name, ns, res.plural)

        def once() -> dict[str, Any]:
            return self._call_json("GET", res.path(ns, name), target)

        return self._retrying(f"get {target.describe()}", once, deadline_s)

    def get_or_none(
        self, res: Resource, name: str, namespace: str | None = None, *, deadline_s: float | None = None
    ) -> dict[str, Any] | None:
        """Like :meth:`get`, but returns ``None`` when the object does not exist.

        A 404 because the resource type itself is not served (CRD missing) still raises.
        """
        try:
            return self.get(res, name, namespace, deadline_s=deadline_s)
        except NotFoundError as err:
            if (err.body or {}).get("details"):
                return None
            raise

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        """Lists objects (the whole List object: ``items`` and ``metadata.resourceVersion``).

        Args:
            res: The resource.
            namespace: Namespace; all namespaces when None.
            label_selector: e.g. ``llm-rollout.io/service=my-svc``.
            field_selector: e.g. ``metadata.name=my-svc``.
            limit: Page size (the first page only is returned).
            deadline_s: Retry budget for transient errors.

        Returns:
            The List object.
        """
        ns = namespace if res.namespaced else None
        query: list[tuple[str, Any]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if limit:
            query.append(("limit", limit))
        target = Target("list", res.kind, "", ns, res.plural)

        def once() -> dict[str, Any]:
            return self._call_json("GET", res.path(ns), target, query=query)

        return self._retrying(f"list {target.describe()}", once, deadline_s)

    def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        missing_ok: bool = True,
        resource_version: str | None = None,
        propagation: str = "Background",
        dry_run: bool = False,
        deadline_s: float | None = None,
    ) -> dict[str, Any] | None:
        """Deletes one object.

        Args:
            res: The resource.
            name: Object name.
            namespace: Namespace.
            missing_ok: Return ``None`` instead of raising when it is already gone.
            resource_version: Precondition: delete only if the object still has this resourceVersion
                (a :class:`ConflictError` otherwise).
            propagation: ``Background`` (the object goes at once, the garbage collector removes its
                children), ``Foreground`` (it stays until its children are gone) or ``Orphan``.
            dry_run: Send ``dryRun=All``.
            deadline_s: Retry budget for transient errors.

        Returns:
            The server's answer (the object being deleted, or a Status), ``None`` if it was missing.
        """
        ns = namespace if res.namespaced else None
        target = Target("delete", res.kind, name, ns, res.plural)
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        query = [("dryRun", "All")] if dry_run else []

        def once() -> dict[str, Any] | None:
            try:
                return self._call_json("DELETE", res.path(ns, name), target, query=query, body=body)
            except NotFoundError:
                if missing_ok:
                    return None
                raise

        return self._retrying(f"delete {target.describe()}", once, deadline_s)

    def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        field_selector: str | None = None,
        label_selector: str | None = None,
        timeout_s: float = 60.0,
        allow_bookmarks: bool = True,
    ) -> WatchStream:
        """Opens a watch from ``resource_version``; iterate the result for events.

        The server ends the watch after ``timeout_s``; the caller re-watches from the last
        resourceVersion it saw (see :mod:`llm_rollout.wait`). Errors are not retried here: opening
        and reading raise the mapped errors (:class:`WatchExpired` for 410).

        Args:
            res: The resource.
            namespace: Namespace; all namespaces when None.
            resource_version: Where to start (a List's ``metadata.resourceVersion``).
            field_selector: e.g. ``metadata.name=x``.
            label_selector: A label selector.
            timeout_s: Server-side watch timeout.
            allow_bookmarks: Ask for BOOKMARK events (keeps the resourceVersion fresh).

        Returns:
            A :class:`WatchStream` (a context manager and an iterator of event dicts).
        """
        ns = namespace if res.namespaced else None
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", max(1, int(timeout_s))),
        ]
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if label_selector:
            query.append(("labelSelector", label_selector))
        target = Target("watch", res.kind, "", ns, res.plural)
        try:
            resp = self._send("GET", res.path(ns), query=query, timeout=(self.request_timeout_s, timeout_s + 15.0))
        except BaseException as err:  # mapped once, re-raised
            mapped = map_error(err, target)
            if mapped is err:
                raise
            raise mapped from err
        return WatchStream(resp, target)
