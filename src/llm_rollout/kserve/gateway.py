"""Which gateway carries an llm-d group's traffic, and whether it keeps the endpoint picker on a split.

A canary member joins its stable member's ``router.route.group``; KServe then gives the group's
HTTPRoute one weighted backendRef per member (``router_group_routing.go`` ``rewriteRulesForGroup``):
an InferencePool for a member with ``router.scheduler`` (the endpoint picker), its Service
otherwise. Upstream's own canary e2e (``test/e2e/llmisvc/test_llm_canary_lifecycle.py``) runs the
Service-backend scenario "with any gateway" but marks the pool and mixed scenarios
``requires_weighted_inference_pool``: Istio only, because the Envoy AI Gateway disables ext_proc for
routes with several weighted InferencePool backendRefs. There every request skips the picker - the
stable's too - so prefix-cache scoring is gone and a P/D member serves decode-only. And
``rewriteRulesForGroup`` keeps weight-0 backends (only stopped members are left out), which "still
causes some gateways (e.g. Envoy Gateway) to leak traffic to the backend": a 0 % dark launch is dark
only where the gateway honours weight 0.

So before a canary joins a picker-routed group, the preflight reads the class of every Gateway the
route attaches to (``Gateway.spec.gatewayClassName`` -> ``GatewayClass.spec.controllerName``) and
refuses a split where upstream says it bypasses the picker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_rollout.errors import SpecError
from llm_rollout.kube import ApiError, ForbiddenError, KubeClient, NotFoundError, Resource
from llm_rollout.spec import RolloutSpec

GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways", "Gateway")
GATEWAY_CLASSES = Resource("gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", False)

DEFAULT_GATEWAY = ("kserve", "kserve-ingress-gateway")
"""KServe's ``kserveIngressGateway`` (``config/configmap/inferenceservice.yaml``): where the managed
route attaches without ``llmd.gateway_refs`` (``config-llm-router-route.yaml``)."""

ISTIO_CONTROLLERS = ("istio.io/gateway-controller",)
"""GatewayClass controllers that split traffic between weighted InferencePools with the picker kept
(upstream runs its pool canary scenarios on Istio only)."""


@dataclass(frozen=True)
class GatewayInfo:
    """One Gateway the group's route attaches to.

    Attributes:
        namespace: Its namespace.
        name: Its name.
        controller: ``GatewayClass.spec.controllerName``; empty when it could not be read.
        unread: Why the controller is unknown (empty when it was read).
    """

    namespace: str
    name: str
    controller: str = ""
    unread: str = ""

    @property
    def istio(self) -> bool:
        return self.controller in ISTIO_CONTROLLERS

    def describe(self) -> str:
        where = f"Gateway {self.namespace}/{self.name}"
        return f"{where} (controller {self.controller})" if self.controller else f"{where} ({self.unread})"


def gateways_of(spec: RolloutSpec) -> list[tuple[str, str]]:
    """``(namespace, name)`` of the Gateways the member's route attaches to: ``llmd.gateway_refs`` in
    the service's namespace (``router.go``: a ref without namespace is the service's), else KServe's
    default gateway."""
    if spec.llmd.gateway_refs:
        return [(spec.namespace, name) for name in spec.llmd.gateway_refs]
    return [DEFAULT_GATEWAY]


def read_gateways(client: KubeClient, spec: RolloutSpec) -> list[GatewayInfo]:
    """Each Gateway of :func:`gateways_of` with its class's controller (or why it is unknown)."""
    quick = client.without_type_grace()  # no Gateway API installed: say so at once
    out: list[GatewayInfo] = []
    for namespace, name in gateways_of(spec):
        try:
            gateway = quick.get(GATEWAYS, name, namespace)
            cls = (gateway.get("spec") or {}).get("gatewayClassName") or ""
            klass = quick.get(GATEWAY_CLASSES, cls)
            controller = (klass.get("spec") or {}).get("controllerName") or ""
            out.append(GatewayInfo(namespace, name, controller, "" if controller else "its class names no controller"))
        except ForbiddenError:
            out.append(GatewayInfo(namespace, name, unread="not readable with the steps' rights"))
        except NotFoundError as err:
            out.append(GatewayInfo(namespace, name, unread=f"not found: {err}"[:200]))
        except ApiError as err:
            out.append(GatewayInfo(namespace, name, unread=f"not readable: {err}"[:200]))
    return out


def _uses_picker(obj: dict[str, Any] | None) -> bool:
    """The member is routed through an InferencePool (it has ``router.scheduler``; P/D needs it)."""
    return "scheduler" in (((obj or {}).get("spec") or {}).get("router") or {})


def check_group_split(
    client: KubeClient, spec: RolloutSpec, new_obj: dict[str, Any], stable_obj: dict[str, Any] | None
) -> list[str]:
    """Refuses a canary whose weighted split would bypass the endpoint picker; notes what is unknown.

    Args:
        client: The kube client.
        spec: The rollout spec.
        new_obj: The canary member about to be applied (with ``router.route.weight``).
        stable_obj: The stable member it joins.

    Returns:
        Notes for the log (an unknown gateway class; whether a 0 % dark launch is dark).

    Raises:
        SpecError: A picker-routed member (ours or the stable's) would be split on a gateway whose
            class upstream does not run weighted InferencePools on.
    """
    route = ((new_obj.get("spec") or {}).get("router") or {}).get("route") or {}
    if route.get("weight") is None:
        return []
    pools = _uses_picker(new_obj) or _uses_picker(stable_obj)
    infos = read_gateways(client, spec)
    notes: list[str] = []
    known_other = [g for g in infos if g.controller and not g.istio]
    unknown = [g for g in infos if not g.controller]
    pd = "prefill" in (new_obj.get("spec") or {}) or "prefill" in ((stable_obj or {}).get("spec") or {})
    if pools and known_other:
        what = "a P/D member" if pd else "a picker-routed member"
        raise SpecError(
            "llmd.gateway_refs",
            f"a weighted canary with {what} would run on {', '.join(g.describe() for g in known_other)}: upstream "
            "splits InferencePool backends only on Istio (test_llm_canary_lifecycle.py marks its pool scenarios "
            "requires_weighted_inference_pool; the Envoy AI Gateway disables ext_proc for routes with several "
            "weighted InferencePool backendRefs), so every request of the group would skip the endpoint picker"
            + (" and the P/D member would serve decode-only" if pd else ""),
            "name a Gateway whose GatewayClass controller is istio.io/gateway-controller in llmd.gateway_refs, or "
            "roll out without a picker-routed split (llmd.scheduler.enabled: false and no llmd.prefill: Service "
            "backends split on any gateway)",
        )
    if pools and unknown:
        notes.append(
            "could not read the class of "
            + ", ".join(g.describe() for g in unknown)
            + ": a weighted InferencePool split keeps the endpoint picker only on Istio (upstream's "
            "requires_weighted_inference_pool); check the gateway before shifting traffic"
        )
    if route["weight"] == 0:
        if infos and all(g.istio for g in infos):
            notes.append("dark launch: weight 0 on Istio sends no traffic to the new member")
        else:
            notes.append(
                "dark launch: weight 0 is not guaranteed dark on "
                + ", ".join(g.describe() for g in infos if not g.istio)
                + " (router_group_routing.go keeps weight-0 backendRefs, which some gateways, e.g. Envoy Gateway, "
                "still send traffic to); validate on the member's own path and expect some users' requests there"
            )
    return notes
