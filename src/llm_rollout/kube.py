"""The Kubernetes client layer: server-side apply, reads, watches and one error mapping.

Everything the library does to a cluster goes through :class:`KubeClient`:

* **Writes are server-side apply only** (``PATCH`` with ``application/apply-patch+yaml``), with one
  field manager (``llm-rollout``) and ``fieldValidation=Strict``, so a typo'd field is rejected by
  the server instead of being silently pruned, a rerun with the same object changes nothing, and a
  field someone else owns is reported as a conflict instead of being overwritten. ``dry_run=True``
  sends ``dryRun=All`` (the "plan" mode): the server validates and defaults, nothing is stored.
* **Errors are mapped once**, here, into :class:`~llm_rollout.errors.PermanentError` (the user or
  the cluster must change something: 4xx, a missing CRD, a conflict with another field manager) or
  :class:`~llm_rollout.errors.TransientError` (connection refused/reset, timeouts, 429, 5xx, an
  expired watch). :func:`retry` retries the transient ones with jittered exponential backoff
  under an overall deadline and raises :class:`~llm_rollout.errors.DeadlineExceeded` carrying
  the last error when the deadline runs out. Every public call of :class:`KubeClient` already
  runs under :func:`retry`.
* **Every call is audited**: ``(verb, group, resource)`` lands in :attr:`KubeClient.audit` and in
  the module-level :data:`AUDIT`, so a test can prove that ``manifests/rbac.yaml`` grants exactly
  what the library uses.

The module does not import kfp; it needs only the ``kubernetes`` client (for configuration,
authentication and its connection pool) and urllib3.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from llm_rollout.errors import DeadlineExceeded, PermanentError, RolloutError, TransientError

log = logging.getLogger(__name__)

FIELD_MANAGER = "llm-rollout"
"""The one field manager every write of the library uses."""

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"

DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_RETRY_DEADLINE_S = 60.0

T = TypeVar("T")


# Errors ----------------------------------------------------------------------------------------


class ApiError(PermanentError):
    """The API server refused a request for a reason retrying cannot fix.

    Attributes:
        status: HTTP status code.
        reason: The Status ``reason`` (``NotFound``, ``Conflict``, ``Invalid`` ...).
        causes: The Status ``details.causes`` (each with ``field``/``message``/``reason``).
        body: The decoded Status object, when the server sent one.
    """

    def __init__(self, message: str, *, status: int, reason: str = "", causes=None, body=None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.causes: list[dict[str, Any]] = list(causes or [])
        self.body: dict[str, Any] = body or {}


class NotFoundError(ApiError):
    """404: the object (or the resource type itself) does not exist."""


class ResourceTypeNotServed(NotFoundError):
    """404 without an object in the Status: the resource type is not served (CRD missing/too old).

    Right after an API server (re)starts, custom resources are 404 for a few seconds until its CRD
    informers have synced; :class:`KubeClient` therefore retries this error for
    ``type_grace_s`` before letting it through.
    """


class ConflictError(ApiError):
    """409: another field manager owns a field we set, or the object changed under a precondition.

    Attributes:
        managers: The other field managers named by the server.
        fields: The conflicting field paths.
    """

    def __init__(self, message: str, *, managers=(), fields=(), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.managers: list[str] = list(managers)
        self.fields: list[str] = list(fields)


class InvalidError(ApiError):
    """400/422: the object was rejected by the schema, ``fieldValidation=Strict`` or a CEL rule.

    Attributes:
        fields: The offending field paths named by the server.
    """

    def __init__(self, message: str, *, fields=(), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.fields: list[str] = list(fields)


class ForbiddenError(ApiError):
    """401/403: the credentials are refused or RBAC does not grant the call."""


class ApiTransientError(TransientError):
    """A failure that may pass: connection error, timeout, 429, 5xx.

    Attributes:
        status: HTTP status code, or ``None`` for connection-level errors.
        retry_after: Seconds the server asked us to wait (``Retry-After``), if any.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class WatchExpired(ApiTransientError):
    """410 Gone: the resourceVersion a watch or list continued from is too old; re-list."""


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,  # MaxRetryError, ProtocolError, timeouts, NewConnectionError ...
    http.client.HTTPException,  # RemoteDisconnected, IncompleteRead
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,
    socket.timeout,
)


@dataclass(frozen=True)
class Target:
    """What a request was about, for error messages."""

    verb: str
    kind: str = ""
    name: str = ""
    namespace: str | None = None
    resource: str = ""

    def describe(self) -> str:
        """``Kind namespace/name`` or the best part of it."""
        what = self.kind or self.resource or "object"
        if self.name:
            return f"{what} {self.namespace + '/' if self.namespace else ''}{self.name}"
        if self.namespace:
            return f"{what} in namespace {self.namespace}"
        return what


def _parse_status(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {"message": body.strip()[:2000]}
        return parsed if isinstance(parsed, dict) else {}
    return body if isinstance(body, dict) else {}


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = None
    with contextlib.suppress(Exception):
        value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _conflict_details(status: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Managers and fields named by a server-side apply conflict Status."""
    managers: list[str] = []
    fields: list[str] = []
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("field"):
            fields.append(cause["field"])
        msg = cause.get("message", "")
        # e.g. 'conflict with "kubectl-edit" using serving.kserve.io/v1alpha1: .spec.containers'
        if '"' in msg:
            name = msg.split('"')[1]
            if name and name not in managers:
                managers.append(name)
    return managers, fields


_TYPED_PATCH_ERROR = "failed to create typed patch object"
_FIELD_PATH = re.compile(r"(\.[A-Za-z0-9_.\[\]=\-\"]+): ")


def map_api_exception(err: ApiException, target: Target) -> RolloutError:
    """Maps an :class:`ApiException` from the client into the library's two kinds of error.

    Args:
        err: The exception the kubernetes client raised.
        target: What the request was about (verb, kind, name), for the message.

    A 500 "failed to create typed patch object" (server-side apply of an object that does not fit
    the schema, e.g. an unknown field under ``fieldValidation=Strict``) is a bad input, not a server
    fault: it maps to :class:`InvalidError` naming the field.

    Returns:
        A :class:`PermanentError` subclass (:class:`NotFoundError`, :class:`ConflictError`,
        :class:`InvalidError`, :class:`ForbiddenError`, :class:`ApiError`) or an
        :class:`ApiTransientError` (:class:`WatchExpired` for 410).
    """
    code = int(err.status or 0)
    status = _parse_status(err.body)
    server_msg = status.get("message") or err.reason or ""
    reason = status.get("reason") or ""
    causes = (status.get("details") or {}).get("causes") or []
    what = target.describe()
    if code == 0:
        return ApiTransientError(f"{target.verb} {what}: no HTTP response ({err.reason})")
    if code == 410:
        return WatchExpired(f"{target.verb} {what}: resourceVersion expired (410 Gone): {server_msg}", status=410)
    if code == 429:
        after = _retry_after(err.headers)
        return ApiTransientError(
            f"{target.verb} {what}: the API server is throttling requests (429): {server_msg}",
            status=429,
            retry_after=after,
        )
    common = {"status": code, "reason": reason, "causes": causes, "body": status}
    if code == 500 and _TYPED_PATCH_ERROR in server_msg:
        # Server-side apply refuses an object that does not fit the schema (unknown field under
        # fieldValidation=Strict, wrong type) with a 500 "failed to create typed patch object":
        # the same object fails the same way every time, so it is a bad input, not a server fault.
        fields = _FIELD_PATH.findall(server_msg.split(_TYPED_PATCH_ERROR, 1)[1])
        named = f" (field{'s' if len(fields) > 1 else ''}: {', '.join(fields)})" if fields else ""
        return InvalidError(
            f"{target.verb} {what} was rejected by the API server's schema{named}: {server_msg}. Fix: correct "
            "or remove the named field (a typo'd or unknown field is refused under fieldValidation=Strict; "
            "check the KServe version's CRD schema)",
            fields=fields,
            **common,
        )
    if code >= 500:
        return ApiTransientError(
            f"{target.verb} {what}: the API server answered {code} {err.reason or ''}: {server_msg}".rstrip(": "),
            status=code,
            retry_after=_retry_after(err.headers),
        )
    if code in (401, 403):
        hint = (
            "check the credentials of the kubeconfig / service account"
            if code == 401
            else f"grant '{target.verb}' on {target.resource or 'this resource'} to the pipeline's service account "
            "(see manifests/rbac.yaml), or run with an account that has it"
        )
        return ForbiddenError(
            f"{target.verb} {what} was refused ({code} {reason}): {server_msg}. Fix: {hint}", **common
        )
    if code == 404:
        if not status.get("details"):
            # A missing object's Status always names it in details; no details: the type is not served.
            msg = (
                f"{target.verb} {what}: the API server does not serve {target.resource or 'this resource type'} "
                f"(404: {server_msg}). Its CustomResourceDefinition is missing or too old: install or upgrade "
                "KServe (CRDs serving.kserve.io) and retry"
            )
            return ResourceTypeNotServed(msg, **common)
        return NotFoundError(f"{what} not found (404): {server_msg}", **common)
    if code == 409:
        managers, fields = _conflict_details(status)
        if managers or fields:
            owners = ", ".join(f'"{m}"' for m in managers) or "another field manager"
            msg = (
                f"{target.verb} {what}: conflict with field manager {owners} over "
                f"{', '.join(fields) or 'some fields'}: someone else (another tool, a person with kubectl "
                f"edit, or a controller) set these fields to other values than {FIELD_MANAGER!r} wants. "
                "Check who changed them and why (kubectl get ... -o yaml --show-managed-fields); then "
                "either revert their change or rerun with force=True (server-side apply --force-conflicts) "
                f"to take the fields over. Server said: {server_msg}"
            )
        else:
            msg = (
                f"{target.verb} {what}: conflict (409 {reason}): {server_msg}. The object was changed by "
                "someone else meanwhile; check it and rerun"
            )
        return ConflictError(msg, managers=managers, fields=fields, **common)
    if code in (400, 422):
        fields = [c["field"] for c in causes if c.get("field")]
        named = f" (field{'s' if len(fields) > 1 else ''}: {', '.join(fields)})" if fields else ""
        msg = (
            f"{target.verb} {what} was rejected by the API server ({code} {reason}){named}: {server_msg}. "
            "Fix: correct or remove the named field (a typo'd or unknown field is refused under "
            "fieldValidation=Strict; check the KServe version's CRD schema)"
        )
        return InvalidError(msg, fields=fields, **common)
    return ApiError(f"{target.verb} {what} failed ({code} {reason}): {server_msg}", **common)


def map_error(err: BaseException, target: Target) -> BaseException:
    """Maps any exception raised by a request to the library's errors (others pass through).

    Args:
        err: What the request raised.
        target: What the request was about.

    Returns:
        The mapped error; library errors and unrelated exceptions are returned unchanged.
    """
    if isinstance(err, RolloutError):
        return err
    if isinstance(err, ApiException):
        return map_api_exception(err, target)
    if isinstance(err, _CONNECTION_ERRORS):
        return ApiTransientError(f"{target.verb} {target.describe()}: connection problem: {type(err).__name__}: {err}")
    return err


# Retry -----------------------------------------------------------------------------------------


def backoff_delays(initial: float = 0.1, maximum: float = 5.0, factor: float = 2.0) -> Iterator[float]:
    """Yields jittered exponential delays: ``uniform(d/2, d)`` with ``d`` doubling up to ``maximum``."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(maximum, delay * factor)


def retry(
    fn: Callable[[], T],
    *,
    deadline_s: float,
    what: str,
    initial_delay_s: float = 0.1,
    max_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Calls ``fn`` until it succeeds, retrying :class:`TransientError` within a deadline.

    Delays grow exponentially with jitter; a server's ``Retry-After`` is honoured when it is
    longer. A :class:`PermanentError` (or anything else) propagates at once.

    Args:
        fn: The operation.
        deadline_s: Overall time budget, first attempt included.
        what: What is being done, for the deadline message.
        initial_delay_s: First backoff delay.
        max_delay_s: Cap on a single delay.
        sleep: Sleep function (tests may pass a fake).
        clock: Monotonic clock (tests may pass a fake).

    Returns:
        What ``fn`` returned.

    Raises:
        DeadlineExceeded: When the deadline ran out; the message and ``__cause__`` carry the last
            transient error.
    """
    start = clock()
    attempts = 0
    delays = backoff_delays(initial_delay_s, max_delay_s)
    while True:
        attempts += 1
        try:
            return fn()
        except TransientError as err:
            last = err
        elapsed = clock() - start
        remaining = deadline_s - elapsed
        delay = next(delays)
        after = getattr(last, "retry_after", None)
        if after:
            delay = max(delay, after)
        if remaining <= 0 or (after and after > remaining):
            raise DeadlineExceeded(
                f"{what}: gave up after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f}s "
                f"(deadline {deadline_s:g}s); last error: {last}"
            ) from last
        delay = min(delay, remaining)  # one last attempt right at the deadline
        log.info("%s: %s; retrying in %.2fs", what, last, delay)
        sleep(delay)


# Resources -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """A REST resource: group, version, plural and scope.

    Attributes:
        group: API group (``""`` for core).
        version: API version.
        plural: Resource name in URLs (``inferenceservices``).
        kind: Kind, for messages.
        namespaced: Whether objects live in namespaces.
    """

    group: str
    version: str
    plural: str
    kind: str = ""
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``group/version`` (or just ``version`` for core)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection, an object or an object's subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


KSERVE_GROUP = "serving.kserve.io"
SERVING_RUNTIMES = Resource(KSERVE_GROUP, "v1alpha1", "servingruntimes", "ServingRuntime")
INFERENCE_SERVICES = Resource(KSERVE_GROUP, "v1beta1", "inferenceservices", "InferenceService")
LLM_INFERENCE_SERVICES = Resource(KSERVE_GROUP, "v1alpha2", "llminferenceservices", "LLMInferenceService")
LLM_INFERENCE_SERVICE_CONFIGS = Resource(
    KSERVE_GROUP, "v1alpha2", "llminferenceserviceconfigs", "LLMInferenceServiceConfig"
)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")

_KNOWN = {
    (r.api_version, r.kind): r
    for r in (
        SERVING_RUNTIMES,
        INFERENCE_SERVICES,
        LLM_INFERENCE_SERVICES,
        LLM_INFERENCE_SERVICE_CONFIGS,
        CRDS,
        PODS,
        EVENTS,
    )
}


def resource_for(obj: dict[str, Any]) -> Resource:
    """The :class:`Resource` of an object dict from its ``apiVersion`` and ``kind``.

    Args:
        obj: A Kubernetes object (``apiVersion``, ``kind``).

    Returns:
        The resource; unknown kinds get the conventional lower-case plural, namespaced.

    Raises:
        PermanentError: When ``apiVersion`` or ``kind`` is missing.
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        raise PermanentError(f"object has no apiVersion/kind: {json.dumps(obj)[:200]}")
    known = _KNOWN.get((api_version, kind))
    if known:
        return known
    group, _, version = api_version.rpartition("/")
    plural = kind.lower() + ("es" if kind.lower().endswith("s") else "s")
    return Resource(group, version, plural, kind)


# Audit -----------------------------------------------------------------------------------------

AUDIT: set[tuple[str, str, str]] = set()
"""Every ``(verb, group, resource)`` any :class:`KubeClient` with auditing on has called."""
_AUDIT_LOCK = threading.Lock()


# The client ------------------------------------------------------------------------------------


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
        audit: Record calls in :data:`AUDIT` (besides :attr:`audit`); test helpers turn it off.
        type_grace_s: How long a "resource type not served" 404 is retried (an API server that just
            restarted serves custom resources only after its CRD informers synced). The CRD
            preflight (:func:`check_crds`) reports truly missing CRDs without this delay.

    Attributes:
        audit: ``(verb, group, resource)`` of every call this client made.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
        audit: bool = True,
        type_grace_s: float = 15.0,
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.request_timeout_s = request_timeout_s
        self.retry_deadline_s = retry_deadline_s
        self.audit: set[tuple[str, str, str]] = set()
        self._global_audit = audit
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
        """The same client (connection, audit) but a "type not served" 404 fails at once."""
        twin = copy.copy(self)
        twin.type_grace_s = 0.0
        return twin

    # Low level ---------------------------------------------------------------------------------

    def _record(self, verb: str, res: Resource, subresource: str | None = None) -> None:
        entry = (verb, res.group, res.plural + (f"/{subresource}" if subresource else ""))
        self.audit.add(entry)
        if self._global_audit:
            with _AUDIT_LOCK:
                AUDIT.add(entry)

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
            self._record("patch", res)
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
            self._record("get", res)
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
            self._record("list", res)
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
            self._record("delete", res)
            try:
                return self._call_json("DELETE", res.path(ns, name), target, query=query, body=body)
            except NotFoundError:
                if missing_ok:
                    return None
                raise

        return self._retrying(f"delete {target.describe()}", once, deadline_s)

    def patch_status(
        self,
        res: Resource,
        name: str,
        namespace: str | None,
        status: dict[str, Any],
        *,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        """Merge-patches the ``status`` subresource (what a controller does; used by the test stand-in).

        Args:
            res: The resource.
            name: Object name.
            namespace: Namespace.
            status: The status fields to set (``None`` values delete keys; lists are replaced).
            deadline_s: Retry budget for transient errors.

        Returns:
            The object after the patch.
        """
        ns = namespace if res.namespaced else None
        target = Target("patch", res.kind, name, ns, res.plural + "/status")

        def once() -> dict[str, Any]:
            self._record("patch", res, "status")
            return self._call_json(
                "PATCH",
                res.path(ns, name, "status"),
                target,
                query=[("fieldManager", self.field_manager)],
                body={"status": status},
                content_type=MERGE_PATCH_CONTENT_TYPE,
            )

        return self._retrying(f"patch status of {target.describe()}", once, deadline_s)

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
        self._record("watch", res)
        try:
            resp = self._send("GET", res.path(ns), query=query, timeout=(self.request_timeout_s, timeout_s + 15.0))
        except BaseException as err:  # mapped once, re-raised
            mapped = map_error(err, target)
            if mapped is err:
                raise
            raise mapped from err
        return WatchStream(resp, target)


class WatchStream:
    """The events of one watch request, as decoded dicts (``type``, ``object``).

    ``ERROR`` events are raised as mapped errors (410 becomes :class:`WatchExpired`). Call
    :meth:`close` (or use it as a context manager) to end it early, from any thread.
    """

    def __init__(self, resp: Any, target: Target) -> None:
        self._resp = resp
        self._target = target
        self._closed = False

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the watch (safe to call twice, and from another thread)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._resp.shutdown()
        with contextlib.suppress(Exception):
            self._resp.close()
        with contextlib.suppress(Exception):
            self._resp.release_conn()

    def _lines(self) -> Iterator[bytes]:
        buf = b""
        for chunk in self._resp.stream(65536, decode_content=True):
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield line
        if buf.strip():
            yield buf

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self._lines():
                try:
                    event = json.loads(line)
                except ValueError as err:
                    raise ApiTransientError(f"watch {self._target.describe()}: undecodable event: {err}") from None
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    code = int(status.get("code") or 500)
                    exc = ApiException(status=code, reason=status.get("reason", ""))
                    exc.body = json.dumps(status)
                    raise map_api_exception(exc, self._target)
                yield event
        except RolloutError:
            raise
        except BaseException as err:  # mapped once, re-raised
            if self._closed:
                return
            mapped = map_error(err, self._target)
            if mapped is err:
                raise
            raise mapped from err
        finally:
            self.close()


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind`` of ``obj``, or None."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


# CRD preflight ---------------------------------------------------------------------------------

KSERVE_INSTALL_HINT = (
    "install or upgrade KServe to 0.20 or newer with its CRDs (e.g. `helm upgrade --install kserve-crd "
    "oci://ghcr.io/kserve/charts/kserve-crd --version v0.20.0` or `kubectl apply --server-side -f "
    "kserve-crds.yaml` from the KServe release), then rerun"
)


@dataclass(frozen=True)
class CrdRequirement:
    """One CRD the rollout needs.

    Attributes:
        name: CRD name (``<plural>.<group>``).
        version: The version that must be served.
        why: What needs it, for the message.
    """

    name: str
    version: str
    why: str


def crd_requirements(*, need_llmd: bool, need_canary: bool = True) -> list[CrdRequirement]:
    """The CRDs (and versions) a rollout with these features needs.

    Args:
        need_llmd: llm-d (LLMInferenceService v1alpha2) is used.
        need_canary: Standard-mode canaries (``spec.canary`` of InferenceService) are used.
    """
    if need_llmd:
        return [
            CrdRequirement(f"llminferenceservices.{KSERVE_GROUP}", "v1alpha2", "llm-d rollouts (LLMInferenceService)")
        ]
    return [
        CrdRequirement(f"servingruntimes.{KSERVE_GROUP}", "v1alpha1", "the vLLM ServingRuntime"),
        CrdRequirement(
            f"inferenceservices.{KSERVE_GROUP}",
            "v1beta1",
            "InferenceService rollouts" + (" with spec.canary (KServe >= 0.20)" if need_canary else ""),
        ),
    ]


def _served_versions(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v.get("name"): v for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served")}


def _schema_has(version: dict[str, Any], path: list[str]) -> bool:
    node = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
    for part in path:
        if node.get("x-kubernetes-preserve-unknown-fields") and not node.get("properties"):
            return True
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return False
    return True


def check_crds(client: KubeClient, need_llmd: bool, *, need_canary: bool = True) -> dict[str, dict[str, Any]]:
    """Checks that the KServe CRDs the rollout needs are installed, established and new enough.

    Reads the named CustomResourceDefinitions (``get`` only; the pipeline's ClusterRole allows
    exactly these names): InferenceService must serve ``v1beta1`` and (for Standard-mode canaries)
    have ``spec.canary`` in its schema; ServingRuntime must serve ``v1alpha1``; with llm-d,
    LLMInferenceService must serve ``v1alpha2``.

    Args:
        client: The kube client.
        need_llmd: The rollout uses llm-d (LLMInferenceService).
        need_canary: Standard-mode canaries are used (``spec.canary`` must exist).

    Returns:
        The CRDs read, by name.

    Raises:
        PermanentError: Naming every missing CRD, version or field and how to install/upgrade KServe.
    """
    problems: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    for req in crd_requirements(need_llmd=need_llmd, need_canary=need_canary):
        crd = client.get_or_none(CRDS, req.name)
        if crd is None:
            problems.append(f"CRD {req.name} is not installed (needed for {req.why})")
            continue
        found[req.name] = crd
        served = _served_versions(crd)
        if req.version not in served:
            problems.append(
                f"CRD {req.name} does not serve {req.version} (served: {', '.join(sorted(served)) or 'none'}); "
                f"{req.why} need {KSERVE_GROUP}/{req.version}"
            )
            continue
        established = condition(crd, "Established")
        if not established or established.get("status") != "True":
            problems.append(
                f"CRD {req.name} is not Established yet ({(established or {}).get('reason', 'no condition')})"
            )
        if (
            req.name.startswith("inferenceservices.")
            and need_canary
            and not _schema_has(served[req.version], ["spec", "canary"])
        ):
            problems.append(
                f"CRD {req.name} {req.version} has no spec.canary: this KServe is older than 0.20 and cannot run "
                "Standard-mode canaries (or set deployment_mode 'Knative')"
            )
    if problems:
        raise PermanentError("KServe prerequisites missing: " + "; ".join(problems) + ". Fix: " + KSERVE_INSTALL_HINT)
    return found
