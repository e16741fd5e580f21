"""What each consumer accepts, checked while the spec is parsed (issue 31).

A spec value that reaches a Kubernetes field, a label, a Go template or a query is checked here
against the grammar of the part that reads it, so that a value the cluster would refuse later (or
worse, execute) is refused up front with the field and the fix. The grammars are Kubernetes'
(``k8s.io/apimachinery/pkg/util/validation/validation.go``: ``IsDNS1123Subdomain``,
``IsValidLabelValue``, ``IsEnvVarName``, ``IsQualifiedName``; ``k8s.io/apimachinery/pkg/api/resource/
quantity.go``: ``ParseQuantity``), the container image reference grammar
(``github.com/distribution/reference/regexp.go``) and KServe's LLMInferenceService merge
(``pkg/controller/v1alpha2/llmisvc/config_merge.go`` ``ReplaceVariables``: the merged config is
marshalled to JSON, run through Go's ``text/template`` and parsed again, so ``{{`` anywhere in it is
executed as a template action).

Checked elsewhere: ``model.name`` (``spec/serving.py``, the preset shell line) and
``runtime.extra_args`` (``spec/checks.py`` and the builders' ``vllm_additional_args``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_rollout.errors import SpecError
from llm_rollout.names import MAX_NAME_LEN

if TYPE_CHECKING:
    from llm_rollout.spec import RolloutSpec

EXCERPT_CHARS = 60
"""Characters of a user's value quoted in a message (a hostile value must not fill the log)."""

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
"""``IsDNS1123Subdomain`` (at most 253 characters): Secret, ServiceAccount, Gateway and HTTPRoute names."""
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
"""``IsValidLabelValue`` (at most 63 characters)."""
ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
"""``IsEnvVarName`` (and not ``.``, ``..`` or starting with ``..``)."""
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_QUANTITY = re.compile(r"(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][-+]?\d+)?")
"""``ParseQuantity`` without a sign (requests and limits must not be negative): a decimal number
and one suffix, binary (``Ki`` .. ``Ei``), decimal SI (``n u m k M G T P E``) or an exponent."""
_IMAGE_REF = re.compile(
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"(?::[0-9]+)?/)?"  # domain[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*"  # path
    r"(?::[\w][\w.-]{0,127})?"  # :tag
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"  # @digest
)
"""The image reference grammar (``distribution/reference`` ``ReferenceRegexp``)."""
TEMPLATE_ACTION = "{{"


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of a value, cut to about ``limit`` characters (never the whole of a huge value)."""
    if isinstance(value, str | bytes):
        head = value[: limit + 1]
        text = repr(head[:limit]) + ("..." if len(head) > limit else "")
    elif isinstance(value, dict | list | tuple | set):
        text = f"a {type(value).__name__} of {len(value)} items"
    else:
        text = repr(value)
    return text if len(text) <= limit + 8 else text[:limit] + "..."


def check_dns_subdomain(value: str, field: str, what: str) -> None:
    """Refuses a name Kubernetes would refuse as a DNS-1123 subdomain (``IsDNS1123Subdomain``)."""
    if not DNS1123_SUBDOMAIN.fullmatch(value) or len(value) > 253:
        raise SpecError(
            field,
            f"{excerpt(value)} is not a valid {what} name (a DNS-1123 subdomain, which Kubernetes requires)",
            "use lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a "
            f"letter or digit, at most 253 characters (e.g. 'my-{what.lower().replace(' ', '-')}')",
        )


def check_label_value(value: str, field: str) -> None:
    """Refuses a value Kubernetes would refuse as a label value (``IsValidLabelValue``)."""
    if len(value) > 63 or not LABEL_VALUE.fullmatch(value):
        raise SpecError(
            field,
            f"{excerpt(value)} becomes a label value, and Kubernetes accepts only up to 63 letters, digits, "
            "'-', '_' and '.' there, starting and ending with a letter or digit",
            "give a short id such as 'v2' or '2024-06-01.1', or leave it empty to derive one from the model URI",
        )


def check_env_name(name: str, field: str) -> None:
    """Refuses an environment variable name Kubernetes would refuse (``IsEnvVarName``)."""
    if not ENV_VAR_NAME.fullmatch(name) or name in (".", "..") or name.startswith(".."):
        raise SpecError(
            field,
            f"{excerpt(name)} is not a valid environment variable name",
            "use letters, digits, '_', '-' and '.', not starting with a digit, e.g. 'VLLM_LOGGING_LEVEL'",
        )


def check_quantity(value: str, field: str) -> None:
    """Refuses a resource quantity Kubernetes would refuse (``resource.ParseQuantity``), or a negative one."""
    if not _QUANTITY.fullmatch(value):
        raise SpecError(
            field,
            f"{excerpt(value)} is not a Kubernetes quantity",
            "write a number with an optional suffix, e.g. '4', '500m' (CPU) or '16Gi' (memory)",
        )


def check_image(value: str, field: str) -> None:
    """Refuses a string that is not a container image reference."""
    if len(value) > 1024 or not _IMAGE_REF.fullmatch(value):
        raise SpecError(
            field,
            f"{excerpt(value)} is not a container image reference",
            "write it like 'registry.example.com/org/vllm:v0.9.2' (or with '@sha256:<digest>')",
        )


def check_qualified_name(value: str, field: str) -> None:
    """Refuses a resource name such as ``nvidia.com/gpu`` that Kubernetes would refuse (``IsQualifiedName``)."""
    prefix, _, name = value.rpartition("/")
    ok = bool(_QUALIFIED_NAME.fullmatch(name)) and len(name) <= 63
    if prefix:
        ok = ok and bool(DNS1123_SUBDOMAIN.fullmatch(prefix)) and len(prefix) <= 253
    if not ok:
        raise SpecError(
            field,
            f"{excerpt(value)} is not a valid extended resource name",
            "write it like 'nvidia.com/gpu' or 'amd.com/gpu'",
        )


def template_actions(obj: Any, path: str = "") -> Iterator[str]:
    """Paths (``spec.template.containers[0].env[3].value``) of every string in ``obj`` holding ``{{``.

    Keys are checked as well as values: the whole merged object is marshalled and run through Go's
    ``text/template`` (``config_merge.go`` ``ReplaceVariables``).
    """
    stack: list[tuple[str, Any]] = [(path, obj)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if TEMPLATE_ACTION in item:
                yield where or "(the object)"
        elif isinstance(item, dict):
            for key, value in item.items():
                sub = f"{where}.{key}" if where else str(key)
                if TEMPLATE_ACTION in str(key):
                    yield sub
                stack.append((sub, value))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", value) for i, value in enumerate(item))


def check_no_template_actions(obj: dict[str, Any], field: str = "spec") -> None:
    """Refuses an object KServe would run through ``text/template`` with a ``{{`` left in it.

    The last line of defence for what any field put into an LLMInferenceService or its config:
    each field is checked on its own while the spec is parsed; this checks the built object.

    Raises:
        SpecError: Naming the first path that holds ``{{``.
    """
    found = sorted(template_actions(obj))
    if found:
        kind = obj.get("kind", "object")
        raise SpecError(
            field,
            f"the {kind} would carry '{{{{' at {found[0]}, which KServe executes as a Go template action when it "
            "merges the LLMInferenceService with its presets (config_merge.go ReplaceVariables)",
            "remove '{{' from the spec value that lands there",
        )


def _no_template(value: str, field: str) -> None:
    if TEMPLATE_ACTION in value:
        raise SpecError(
            field,
            f"{excerpt(value)} contains '{{{{', which KServe executes as a Go template action when it merges "
            "an LLMInferenceService (config_merge.go ReplaceVariables)",
            "write the value without '{{'",
        )


def _no_control(value: str, field: str, what: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise SpecError(
            field,
            f"{excerpt(value)} holds a newline or another control character, which {what}",
            "write it on one line, without control characters",
        )


SERVICE_ACCOUNT_DIRS = ("/var/run/secrets/kubernetes.io", "/run/secrets/kubernetes.io")
"""Where Kubernetes mounts a pod's service-account token: never an API key to send to a model server."""
_NOT_A_KEY_DIRS = (*SERVICE_ACCOUNT_DIRS, "/proc", "/sys", "/dev")
_NOT_A_KEY_ENV = re.compile(
    r"KUBERNETES_.*|KUBECONFIG|AWS_(SECRET_ACCESS_KEY|SESSION_TOKEN|ACCESS_KEY_ID|WEB_IDENTITY_TOKEN_FILE)|"
    r"GOOGLE_APPLICATION_CREDENTIALS|AZURE_(CLIENT_SECRET|FEDERATED_TOKEN_FILE)|MINIO_(ROOT_)?(SECRET_KEY|PASSWORD)|"
    r"(MLPIPELINE|KFP)_.*|ARGO_.*"
)
"""Variables that hold a pod's other credentials (cluster, object store, cloud, KFP/Argo): the
validator would send their value to the model server as ``Bearer``."""


def check_api_key_file(file: str) -> Path:
    """The API key file's path, refused when it is the pod's own credential or a system file.

    Symlinks are resolved (a projected service-account token is a symlink chain).

    Raises:
        SpecError: A path under the service-account mount, ``/proc``, ``/sys`` or ``/dev``.
    """
    path = Path(file).expanduser()
    real = os.path.realpath(path)
    for root in _NOT_A_KEY_DIRS:
        if real == root or real.startswith(root + "/") or str(path).startswith(root + "/"):
            raise SpecError(
                "validation.api_key_file",
                f"{excerpt(str(path), 120)} is under {root}, which holds the pod's own credentials or system "
                "files, not the model server's API key",
                "mount the API key's Secret as a file elsewhere (e.g. /var/secrets/llm-api-key/token)",
            )
    return path


def check_api_key_env(name: str) -> None:
    """Refuses an API key variable that holds another credential of the pod, or is no variable name."""
    check_env_name(name, "validation.api_key_env")
    if _NOT_A_KEY_ENV.fullmatch(name):
        raise SpecError(
            "validation.api_key_env",
            f"{name} holds another credential of the step's pod (cluster, object store, cloud or pipeline), "
            "which would be sent to the model server as its API key",
            "put the model server's key in a variable of its own (e.g. LLM_API_KEY from its Secret)",
        )


def check_consumer_rules(spec: RolloutSpec) -> None:
    """Every value that reaches a Kubernetes field, label, template or URL, against what reads it.

    Raises:
        SpecError: On the first value its consumer would refuse or execute.
    """
    rt, res, ld, model = spec.runtime, spec.resources, spec.llmd, spec.model
    if model.revision:
        check_label_value(model.revision, "model.revision")
    for field, value in (("model.uri", model.uri), ("model.digest", model.digest or "")):
        _no_template(value, field)
        # Quotes are safe here: the URI reaches the template as JSON-encoded data, never substituted into it.
        _no_control(value, field, "breaks the storage URI KServe puts into the pod's command line")
    for name, value in rt.env.items():
        check_env_name(name, f"runtime.env.{name}")
        _no_template(value, f"runtime.env.{name}")
    for name, ref in rt.secret_env.items():
        check_env_name(name, f"runtime.secret_env.{name}")
        check_dns_subdomain(ref.name, f"runtime.secret_env.{name}.name", "Secret")
        if not re.fullmatch(r"[-._a-zA-Z0-9]+", ref.key) or len(ref.key) > 253:
            raise SpecError(
                f"runtime.secret_env.{name}.key",
                f"{excerpt(ref.key)} is not a valid Secret key",
                "use letters, digits, '-', '_' and '.' (the key's name inside the Secret)",
            )
    check_image(rt.image, "runtime.image")
    if rt.service_account is not None:
        check_dns_subdomain(rt.service_account, "runtime.service_account", "service account")
    check_dns_subdomain(spec.service_account, "service_account", "service account")
    for field in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        check_quantity(getattr(res, field), f"resources.{field}")
    check_qualified_name(res.gpu_resource, "resources.gpu_resource")
    if ld.image is not None:
        check_image(ld.image, "llmd.image")
    if ld.preset_name is not None:
        check_dns_subdomain(ld.preset_name, "llmd.preset_name", "LLMInferenceServiceConfig")
    for kind, refs in (("gateway_refs", ld.gateway_refs), ("http_route_refs", ld.http_route_refs)):
        for i, ref in enumerate(refs):
            check_dns_subdomain(ref, f"llmd.{kind}[{i}]", "Gateway" if kind == "gateway_refs" else "HTTPRoute")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", ld.kv_connector):
        raise SpecError(
            "llmd.kv_connector",
            f"{excerpt(ld.kv_connector)} is not a vLLM KV connector class name",
            "give the class name, e.g. 'NixlConnector'",
        )
    urls = [(f"validation.metrics_urls.{role}", url) for role, url in spec.validation.metrics_urls.items()]
    urls.append(("validation.recovery.base_url", spec.validation.recovery.base_url or ""))
    scalings = [("scaling", spec.scaling), ("llmd.decode.scaling", ld.decode.scaling)]
    if ld.prefill is not None:
        scalings.append(("llmd.prefill.scaling", ld.prefill.scaling))
    urls += [(f"{where}.prometheus_url", sc.prometheus_url) for where, sc in scalings if sc is not None]
    for field, url in urls:
        _no_control(url, field, "no HTTP request line can carry")
        _no_template(url, field)  # a role's KEDA trigger sits inside the LLMInferenceService
    if spec.validation.api_key_env:
        check_api_key_env(spec.validation.api_key_env)
    if spec.validation.api_key_file:
        check_api_key_file(spec.validation.api_key_file)
    _say_renamed(spec)


def _say_renamed(spec: RolloutSpec) -> None:
    """A name that is not DNS-safe as given: refused when letters would be lost, else said once."""
    for field, raw, safe in (
        ("name", spec.name, spec.service_name),
        ("runtime.runtime_name", spec.runtime.runtime_name, spec.runtime_name),
        ("llmd.route_group", spec.llmd.route_group, spec.route_group),
    ):
        if not raw or raw == safe:
            continue
        if any(not c.isascii() for c in raw):
            raise SpecError(
                field,
                f"{excerpt(raw)} holds characters outside ASCII, which a Kubernetes name cannot carry; "
                f"they would be dropped (leaving {safe!r})",
                "give the name in lowercase ASCII letters, digits and '-', e.g. 'my-model'",
            )
        logging.getLogger(__name__).warning(
            "%s %s is not used as given: Kubernetes objects are named %r (lowercase DNS-1123, at most %d "
            "characters). Write that in the spec to silence this",
            field,
            excerpt(raw),
            safe,
            63 if field == "llmd.route_group" else MAX_NAME_LEN,
        )
