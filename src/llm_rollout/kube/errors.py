"""The kube layer's errors: every failed request is mapped once, here, into the library's two kinds.

:func:`map_error` (and :func:`map_api_exception` for an HTTP answer) turn what the ``kubernetes``
client and urllib3 raise into :class:`~llm_rollout.errors.PermanentError` subclasses (the user or
the cluster must change something: 4xx, a missing CRD, a conflict with another field manager) or
:class:`ApiTransientError` (connection refused/reset, timeouts, 429, 5xx, an expired watch), which
:func:`llm_rollout.kube.retry.retry` retries. The split follows lightkube's
(``lightkube/core/exceptions.py`` beside its client).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from llm_rollout.errors import PermanentError, RolloutError, TransientError

FIELD_MANAGER = "llm-rollout"
"""The one field manager every write of the library uses (the client's default; conflict messages name it)."""


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
    informers have synced; :class:`~llm_rollout.kube.client.KubeClient` therefore retries this error for
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
