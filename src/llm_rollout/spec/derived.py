"""Every name and label KServe derives from an InferenceService's name and namespace, checked when the spec is read.

KServe builds each predictor's children from ``<isvc>[-<predictor>]-predictor``
(``constants.go`` ``PredictorServiceName``): the Deployment, Service and autoscaler are named so,
the pods get ``app: isvc.<that name>`` (``constants.GetRawServiceLabel``, set by
``deployment_reconciler.go`` ``createRawDefaultDeployment``), and the component's URL host is
rendered by ``ingress/domain.go`` ``GenerateDomainName`` from the ingress domain template (default
``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``) and refused unless it is a fully qualified
domain name (``IsFullyQualifiedDomainName``: every label at most 63 characters), for the
InferenceService itself and for every component (``raw_kube_reconciler.go`` ``createRawURL``). A
name, label value or host label over 63 characters fails in the controller after deploy-model has
written the object, and the rollout times out. Here they are computed up front, with the longest
predictor name a canary can get (:data:`llm_rollout.names.ISVC_MEMBER_MAX_LEN`), and a spec that
cannot be served is refused naming the limit, the derived name and the fix.

Knative mode: the Knative Service is the unnamed predictor's ``<isvc>-predictor``; Knative names its
revisions ``<ksvc>-00001`` and, with tag routing, the candidate's host ``latest-<ksvc>`` (its tag
template ``{{.Tag}}-{{.Name}}``); each must be a DNS label too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llm_rollout.errors import SpecError
from llm_rollout.names import ISVC_MEMBER_MAX_LEN, predictor_service_name

if TYPE_CHECKING:
    from llm_rollout.spec import RolloutSpec

LIMIT = 63
"""A DNS label, a label value and a Service name: at most 63 characters."""

_MEMBER = "m" * ISVC_MEMBER_MAX_LEN


@dataclass(frozen=True)
class DerivedName:
    """One name KServe (or Knative) derives.

    Attributes:
        what: What it is, e.g. ``the canary's Deployment and Service``.
        shown: The name as shown to the user (a canary's predictor name as ``<canary>``).
        length: Its length with the longest predictor name a canary can get.
        source: The upstream rule that derives and checks it.
        with_namespace: Whether the namespace is part of it.
    """

    what: str
    shown: str
    length: int
    source: str
    with_namespace: bool = False


def _name(what: str, template: str, service: str, namespace: str, source: str) -> DerivedName:
    real = template.format(svc=service, ns=namespace, member=_MEMBER)
    shown = template.format(svc=service, ns=namespace, member="<canary>")
    return DerivedName(what, shown, len(real), source, "{ns}" in template)


def derived_names(spec: RolloutSpec) -> list[DerivedName]:
    """The names and labels KServe derives for ``spec``'s InferenceService (the kserve platform without llm-d)."""
    s, ns = spec.service_name, spec.namespace
    domain = "domain.go GenerateDomainName (template {{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }})"
    out = [_name("InferenceService's host label", "{svc}-{ns}", s, ns, domain)]
    if spec.deployment_mode == "Knative":
        ksvc = predictor_service_name(s)
        out += [
            _name("Knative Service's first revision", ksvc + "-00001", s, ns, "Knative revision names (DNS labels)"),
            _name("candidate's tag host label", "latest-" + ksvc, s, ns, "Knative tag template {{.Tag}}-{{.Name}}"),
        ]
        return out
    canary = predictor_service_name("{svc}", "{member}")
    out += [
        _name("canary's Deployment and Service", canary, s, ns, "constants.go PredictorServiceName"),
        _name("canary pods' label app", "isvc." + canary, s, ns, "constants.go GetRawServiceLabel"),
        _name("canary's host label", canary + "-{ns}", s, ns, domain),
    ]
    return out


def check_derived_names(spec: RolloutSpec) -> None:
    """Refuses a name and namespace from which KServe would derive a name over 63 characters.

    Raises:
        SpecError: On ``name``, naming the first derived name over the limit, its length and the
            rule, and as the fix the longest name (and, where the namespace counts, the longest
            namespace) with which every derived name fits.
    """
    names = derived_names(spec)
    bad = [d for d in names if d.length > LIMIT]
    if not bad:
        return
    first = bad[0]
    s_len, ns_len = len(spec.service_name), len(spec.namespace)
    max_name = min(LIMIT - (d.length - s_len) for d in names)
    fix = f"shorten name to at most {max_name} characters" if max_name > 0 else "use a shorter namespace"
    if all(d.with_namespace for d in bad):
        max_ns = min(LIMIT - (d.length - ns_len) for d in names if d.with_namespace)
        if max_ns > 0:
            fix += f", or deploy into a namespace of at most {max_ns} characters"
    with_member = f" with a {ISVC_MEMBER_MAX_LEN}-character predictor name" if "<canary>" in first.shown else ""
    raise SpecError(
        "name",
        f"KServe would name the {first.what} {first.shown!r}: {first.length} characters{with_member}, "
        f"over Kubernetes' limit of {LIMIT} ({first.source})",
        fix,
    )
