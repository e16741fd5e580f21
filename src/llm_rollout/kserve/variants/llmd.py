"""The llm-d variant: a group of ``LLMInferenceService`` members in one ``router.route.group``.

A new revision is a second member with its ``weight`` (the stable member is never written by a
rollout); promotion moves the weights (in ``canary.steps``), then retires the old member. Members come
and go; the lease and the promotion record live on the service's Lease ``<service>-rollout``
(:mod:`llm_rollout.kserve.records`), as for an InferenceService.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import (
    LABEL_REVISION,
    LABEL_RUN_ID,
    LABEL_SERVICE,
    LLMISVC_API,
    STOP_ANNOTATION,
    Member,
)
from llm_rollout.kserve.gateway import check_group_split
from llm_rollout.kserve.lease import PROMOTION_STEP, _set_lease_field, _step_of, _step_value
from llm_rollout.kserve.records import (
    STABLE,
    ServiceRef,
    _annotations,
    _compact,
    _json_annotation,
    _labels,
    _meta,
    record_object_name,
    service_ref,
)
from llm_rollout.kserve.variants.base import (
    Doc,
    Plan,
    PromoteSteps,
    Promotion,
    PromotionConflict,
    Removal,
    RunGate,
    Variant,
    conditions_summary,
)
from llm_rollout.kserve.views import MemberView
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import LLM_INFERENCE_SERVICE_CONFIGS, LLM_INFERENCE_SERVICES, KubeClient
from llm_rollout.names import member_name
from llm_rollout.platform import Gate
from llm_rollout.record import DeploymentRecord, StableRef

log = logging.getLogger(__name__)


LLMD_STABLE_WEIGHT = 100
"""Weight a first llm-d member gets in its route group; a canary's weight is relative to it."""


def _llmisvc_url(obj: dict[str, Any]) -> str | None:
    return MemberView(obj).url


def _llmd_canary_weight(percent: int, stable_weight: int) -> int:
    if percent >= 100:
        raise SpecError(
            "canary.traffic_percent",
            "100% for a new llm-d member would need the stable member's weight at 0, but a rollout never "
            "touches the stable member",
            "give at most 99 (promotion moves the rest of the traffic after validation)",
        )
    return round(stable_weight * percent / (100 - percent))


def _plan(v: LlmdGroup, client: KubeClient, new: Member) -> Plan:
    plan = _plan_on(v, v.members(client), new)
    if plan.live_stable is not None:
        # A split the gateway would route past the endpoint picker is refused before any write (gateway.py).
        plan.notes += check_group_split(client, v.spec, plan.obj, plan.live_stable)
    return plan


def _plan_on(v: LlmdGroup, members: list[dict[str, Any]], new: Member) -> Plan:
    """The plan beside the group's live ``members`` (no cluster call; the gateway check is :func:`_plan`'s)."""
    spec = v.spec
    plan = Plan()
    plan.kind = "LLMInferenceService"
    plan.object_name = new.name
    plan.readiness_kwargs = {"prefill": spec.llmd.prefill is not None}
    others = [m for m in members if MemberView(m).name != new.name]
    # A weight needs a group and the managed route (KServe's webhook refuses it otherwise).
    grouped = spec.route_group is not None and not spec.llmd.http_route_refs
    if not others:
        plan.obj = builders.llm_inference_service(spec, new, weight=LLMD_STABLE_WEIGHT if grouped else None)
        return plan
    stable = max(others, key=lambda m: (_weight(m), MemberView(m).meta.get("creationTimestamp") or ""))
    if len(others) > 1:
        plan.notes.append(
            "more than one other member exists; taking "
            f"{stable['metadata']['name']} (highest weight) as stable and leaving the others alone"
        )
    stable_view = MemberView(stable)
    plan.stable = StableRef(
        member=stable_view.name,
        model_uri=stable_view.model_uri,
        revision=stable_view.labels.get(LABEL_REVISION, ""),
        resource_version=stable_view.resource_version,
        endpoint_url=_llmisvc_url(stable),
        generation=stable_view.generation,
    )
    plan.service_url = _llmisvc_url(stable)
    w = _llmd_canary_weight(spec.canary.traffic_percent, _weight(stable) or LLMD_STABLE_WEIGHT) if grouped else None
    plan.obj = builders.llm_inference_service(spec, new, weight=w)
    plan.live_stable = stable
    plan.canary = True
    plan.traffic_percent = spec.canary.traffic_percent
    return plan


def _llmisvc_from_live(live: dict[str, Any], *, weight: int | None = None, stop: bool = False) -> dict[str, Any]:
    meta = _meta(live)
    spec_body = copy.deepcopy(live.get("spec") or {})
    if weight is not None:
        spec_body.setdefault("router", {}).setdefault("route", {})["weight"] = weight
    out_meta: dict[str, Any] = {"name": meta["name"], "namespace": meta["namespace"], "labels": _labels(live)}
    if stop:
        out_meta["annotations"] = {STOP_ANNOTATION: "true"}
    return {"apiVersion": live["apiVersion"], "kind": live["kind"], "metadata": out_meta, "spec": spec_body}


def _member_of(rec: DeploymentRecord, traffic: int = 0) -> Member:
    return Member(rec.member, rec.model_uri, rec.revision, traffic, run_id=rec.run_id)


def _weight(obj: dict[str, Any] | None) -> int:
    return MemberView(obj).weight


def _promote(
    v: LlmdGroup,
    client: KubeClient,
    rec: DeploymentRecord,
    ref: ServiceRef,
    gate: Gate | None,
    run_gate: RunGate,
    retire: str,
    timeout_s: float | None,
) -> Promotion:
    spec = v.spec
    ns = spec.namespace
    holder = client.get_or_none(ref.res, ref.name, ns)
    current = _json_annotation(holder, STABLE) or {}
    new_live = client.get_or_none(LLM_INFERENCE_SERVICES, rec.member, ns)
    if current.get("member") == rec.member and new_live is not None:
        return Promotion(
            "none",
            f"already promoted: {rec.member} is the stable member of {spec.service_name}",
            rec.member,
            rec.stable.member if rec.stable else None,
        )
    if new_live is None:
        raise PermanentError(
            f"LLMInferenceService {ns}/{rec.member} is gone (rolled back or deleted); nothing to promote. Fix: redeploy"
        )
    served = {"member_spec": copy.deepcopy(new_live.get("spec") or {}), "labels": _labels(new_live)}
    if spec.llmd.use_preset:
        # restore() brings the member back; its preset may be gone with it (ownerReferences).
        preset = builders.llm_inference_service_config(spec)
        served["preset"] = {"name": preset["metadata"]["name"], "spec": preset["spec"]}
    if rec.stable is None:
        return Promotion(
            "promote",
            f"promoted {rec.member} ({rec.model_uri}): first rollout of {spec.service_name}, now stable",
            rec.member,
            served=served,
        )
    step = _step_of(holder, rec)
    old = client.get_or_none(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
    if old is None or STOP_ANNOTATION in _annotations(old):
        if step and step.get("percent") == 100:
            # A rerun after the old member was already retired: only the record is left to write.
            return Promotion(
                "promote",
                f"promoted {rec.member} ({rec.model_uri}); {rec.stable.member} already retired",
                rec.member,
                rec.stable.member,
                served=served,
            )
        raise PromotionConflict(
            f"LLMInferenceService {ns}/{rec.stable.member} (the stable member {rec.member} was validated against) "
            "was deleted or stopped by someone else; nothing was changed. Fix: check the group, then redeploy"
        )
    old_gen = _meta(old).get("generation")
    expected = step.get("stable_generation") if step and step.get("stable_generation") else rec.stable.generation
    old_uri = MemberView(old).model_uri
    if (expected is not None and old_gen != expected) or (rec.stable.model_uri and old_uri != rec.stable.model_uri):
        raise PromotionConflict(
            f"LLMInferenceService {ns}/{rec.stable.member}: the stable member changed since {rec.member} was "
            f"deployed (generation {expected} -> {old_gen}, model {rec.stable.model_uri} -> {old_uri}); someone "
            "else edited it. Nothing was changed. Fix: check the change (managedFields), then redeploy"
        )
    stable_weight = int(step["stable_weight"]) if step and step.get("stable_weight") else _weight(old)
    stable_weight = stable_weight or LLMD_STABLE_WEIGHT
    previous_record = None
    if not current:
        previous_record = {
            "member": rec.stable.member,
            "revision": rec.stable.revision,
            "model_uri": rec.stable.model_uri,
            "member_spec": copy.deepcopy(old.get("spec") or {}),
            "labels": _labels(old),
        }
        preset = _live_preset(client, ns, old)
        if preset is not None:
            previous_record["preset"] = preset
    prefill = spec.llmd.prefill is not None

    def set_new_weight(weight: int) -> None:
        applied = client.apply(v.member_at(rec, weight))
        v.wait(
            client,
            rec.member,
            Readiness.llm_inference_service(prefill=prefill, min_generation=_meta(applied).get("generation")),
            timeout_s,
        )

    for percent in [*v.traffic_steps(rec, gate), 100]:
        if percent < 100:
            set_new_weight(max(1, round(stable_weight * percent / (100 - percent))))
            _set_lease_field(client, ref, rec.run_id, PROMOTION_STEP, _step_value(rec, percent, old_gen, stable_weight))
            run_gate(percent)
            continue
        set_new_weight(stable_weight)
        zeroed = client.apply(_llmisvc_from_live(old, weight=0))
        step_data = json.loads(_step_value(rec, 100, old_gen, stable_weight))
        step_data["stable_generation"] = _meta(zeroed).get("generation")
        _set_lease_field(client, ref, rec.run_id, PROMOTION_STEP, _compact(step_data))
        run_gate(100, restore_stable_weight=stable_weight)
        break

    old = client.get(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
    if retire == "stop":
        client.apply(_llmisvc_from_live(old, weight=0, stop=True))
        how = "stopped"
    else:
        client.delete(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
        how = "deleted"
    return Promotion(
        "promote",
        f"promoted {rec.member} ({rec.model_uri}) in {spec.service_name}; {how} {rec.stable.member}",
        rec.member,
        rec.stable.member,
        served=served,
        previous_record=previous_record,
    )


def _rollback(
    v: LlmdGroup, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, restore_stable_weight: int | None
) -> Removal:
    spec = v.spec
    ns = spec.namespace
    holder = client.get_or_none(ref.res, ref.name, ns)
    if (_json_annotation(holder, STABLE) or {}).get("member") == rec.member:
        return Removal(False, f"{rec.member} is already promoted; it is not demoted")
    step = _step_of(holder, rec)
    if rec.stable is not None and restore_stable_weight is None and step and step.get("percent") == 100:
        restore_stable_weight = int(step.get("stable_weight") or 0) or None
    if rec.stable is not None and restore_stable_weight:
        old = client.get_or_none(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
        if old is not None and _weight(old) != restore_stable_weight:
            # Only after a gate failed at the last step (the stable member was at weight 0).
            client.apply(_llmisvc_from_live(old, weight=restore_stable_weight))
    new_live = client.get_or_none(LLM_INFERENCE_SERVICES, rec.member, ns)
    if new_live is None:
        return Removal(False, f"nothing to roll back: LLMInferenceService {rec.member} does not exist")
    if rec.stable is not None and _weight(new_live) != 0:
        # Traffic off first (the router drops it from the group), then the member goes.
        client.apply(builders.llm_inference_service(spec, _member_of(rec), weight=0))
    client.delete(LLM_INFERENCE_SERVICES, rec.member, ns)
    if rec.stable is None:
        return Removal(
            True, f"deleted LLMInferenceService {rec.member}: the first revision of {spec.service_name} did not pass"
        )
    return Removal(True, f"rolled back {rec.member}: weight 0 and deleted; {rec.stable.member} serves all traffic")


def _live_preset(client: KubeClient, namespace: str, member: dict[str, Any]) -> dict[str, Any] | None:
    """``{name, spec}`` of the preset (our LLMInferenceServiceConfig) live ``member`` references, if any."""
    for ref in (member.get("spec") or {}).get("baseRefs") or []:
        cfg = client.get_or_none(LLM_INFERENCE_SERVICE_CONFIGS, ref.get("name", ""), namespace)
        if cfg is not None and _labels(cfg).get(LABEL_SERVICE):
            return {"name": ref["name"], "spec": copy.deepcopy(cfg.get("spec") or {})}
    return None


_PRESET_LABELS = (LABEL_SERVICE, *builders.MANAGED_BY)


def _owned_shape(cfg: dict[str, Any]) -> dict[str, Any]:
    """What we apply of a live preset: name, namespace, labels and spec."""
    meta = _meta(cfg)
    return {
        "apiVersion": cfg["apiVersion"],
        "kind": cfg["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": _labels(cfg)},
        "spec": copy.deepcopy(cfg.get("spec") or {}),
    }


def _preset_owners(client: KubeClient, spec: Any, preset: str) -> list[dict[str, Any]]:
    """``ownerReferences`` for preset ``preset``: every live member of the service that references it."""
    members = (
        client.list(LLM_INFERENCE_SERVICES, spec.namespace, label_selector=f"{LABEL_SERVICE}={spec.service_name}").get(
            "items"
        )
        or []
    )
    return [
        builders.owner_reference(m)
        for m in members
        if (m.get("metadata") or {}).get("uid")
        and any(ref.get("name") == preset for ref in (m.get("spec") or {}).get("baseRefs") or [])
    ]


def _with_owners(client: KubeClient, spec: Any, preset: dict[str, Any]) -> dict[str, Any]:
    """``preset`` (an LLMInferenceServiceConfig) owned by the members that reference it.

    Owned, a preset goes with the last member that uses it (Kubernetes' garbage collector deletes
    an object once every owner is gone); each apply lists every current owner, since one field
    manager's apply replaces the list it owns.
    """
    out = copy.deepcopy(preset)
    out["metadata"].pop("ownerReferences", None)
    owners = _preset_owners(client, spec, out["metadata"]["name"])
    if owners:
        out["metadata"]["ownerReferences"] = sorted(owners, key=lambda o: o["name"])
    return out


class LlmdGroup(Variant):
    """An llm-d group: ``LLMInferenceService`` members of ``<service>`` in one route group."""

    kind = "LLMInferenceService"
    llmd = True

    def ref(self) -> ServiceRef:
        s = self.spec
        # Earlier versions kept lease and records on an LLMInferenceServiceConfig of the same name.
        return service_ref(
            "LLMInferenceService",
            s.service_name,
            s.namespace,
            LLM_INFERENCE_SERVICE_CONFIGS,
            record_object_name(s.service_name),
        )

    def members(self, client: KubeClient) -> list[dict[str, Any]]:
        """The group's members (labelled with the service), in the order the server lists them."""
        s = self.spec
        found = client.list(LLM_INFERENCE_SERVICES, s.namespace, label_selector=f"{LABEL_SERVICE}={s.service_name}")
        return found.get("items") or []

    def runtime_object(self) -> dict[str, Any] | None:
        return builders.llm_inference_service_config(self.spec) if self.spec.llmd.use_preset else None

    def owned_runtime_object(self, client: KubeClient) -> dict[str, Any] | None:
        obj = self.runtime_object()
        return None if obj is None else _with_owners(client, self.spec, obj)

    def after_apply(self, client: KubeClient, applied: dict[str, Any], *, dry_run: bool = False) -> None:
        # The new member now has a uid: it joins the owners of its preset (and the preset exists
        # even when register-runtime ran against another namespace or not at all).
        if self.spec.llmd.use_preset:
            client.apply(
                _with_owners(client, self.spec, builders.llm_inference_service_config(self.spec)), dry_run=dry_run
            )

    def member_name(self, revision: str) -> str:
        return member_name(self.spec.service_name, revision)

    # deploy

    def plan(self, client: KubeClient, new: Member) -> Plan:
        return _plan(self, client, new)

    def plan_on(self, live: list[Doc], new: Member, recorded: Doc | None = None) -> Plan:
        return _plan_on(self, live, new)

    def serving_after(self, live: list[Doc], plan: Plan) -> list[Doc]:
        # The stable member is never written by a rollout: the new one joins the group beside it.
        name = plan.obj["metadata"]["name"]
        return [m for m in live if MemberView(m).name != name] + [plan.obj]

    def promoted_objects(self, live: list[Doc], rec: DeploymentRecord) -> list[Doc]:
        if rec.stable is None:
            return [m for m in live if MemberView(m).name == rec.member]
        old = next((m for m in live if MemberView(m).name == rec.stable.member), None)
        # The new member takes the stable's weight; the old one goes (retire: delete).
        return [self.member_at(rec, _weight(old) or LLMD_STABLE_WEIGHT)]

    def member_at(self, rec: DeploymentRecord, weight: int) -> dict[str, Any]:
        """The new member ``rec`` at ``weight`` in the route group (each step of a promotion)."""
        return builders.llm_inference_service(self.spec, _member_of(rec), weight=weight)

    def readiness(self, plan: Plan, generation: int | None) -> Readiness:
        return Readiness.llm_inference_service(min_generation=generation, **plan.readiness_kwargs)

    def addresses(self, ready: dict[str, Any], plan: Plan, new: Member) -> tuple[str | None, str | None]:
        endpoint = _llmisvc_url(ready)
        return endpoint, plan.service_url or endpoint

    def stable_serves(self, client: KubeClient, holder: dict[str, Any] | None, stable: dict[str, Any]) -> bool:
        member = client.get_or_none(LLM_INFERENCE_SERVICES, stable["member"], self.spec.namespace)
        return member is not None and STOP_ANNOTATION not in _annotations(member)

    # promote / rollback

    def promote(self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, steps: PromoteSteps) -> Promotion:
        return _promote(self, client, rec, ref, steps.gate, steps.run_gate, steps.retire, steps.timeout_s)

    def rollback(
        self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, restore_stable_weight: int | None
    ) -> Removal:
        return _rollback(self, client, rec, ref, restore_stable_weight)

    def revisions_of_run(self, client: KubeClient, run_id: str, base: dict[str, Any]) -> list[DeploymentRecord]:
        label = builders.run_label(run_id)
        ref = self.ref()
        stable_member = (_json_annotation(client.get_or_none(ref.res, ref.name, ref.namespace), STABLE) or {}).get(
            "member"
        )
        items = self.members(client)
        out: list[DeploymentRecord] = []
        for m in items:
            mm = _meta(m)
            if _labels(m).get(LABEL_RUN_ID) != label or mm["name"] == stable_member:
                continue
            others = [o for o in items if _meta(o)["name"] != mm["name"] and STOP_ANNOTATION not in _annotations(o)]
            stable = max(others, key=_weight) if others else None
            out.append(
                DeploymentRecord(
                    kind="LLMInferenceService",
                    member=mm["name"],
                    revision=_labels(m).get(LABEL_REVISION, ""),
                    model_uri=MemberView(m).model_uri,
                    canary=stable is not None,
                    stable=StableRef(member=_meta(stable)["name"], revision=_labels(stable).get(LABEL_REVISION, ""))
                    if stable
                    else None,
                    **base,
                )
            )
        return out

    def member_metrics_urls(self, rec: DeploymentRecord) -> tuple[dict[str, str], str]:
        return ({}, f"{rec.kind} members answer through the gateway, not through an address of their own")

    # status / restore

    def status_rows(
        self, client: KubeClient, holder: dict[str, Any] | None, stable: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        members = self.members(client)
        stable_member = (stable or {}).get("member")
        active = [m for m in members if STOP_ANNOTATION not in _annotations(m)]
        total = sum(_weight(m) for m in active) or 0
        if not stable_member and active:
            stable_member = _meta(max(active, key=_weight))["name"]
        url = None
        revisions: list[dict[str, Any]] = []
        for m in members:
            mm = _meta(m)
            readiness = conditions_summary(m)
            stopped = STOP_ANNOTATION in _annotations(m)
            w = _weight(m)
            revisions.append(
                {
                    "member": mm["name"],
                    "role": "stopped" if stopped else ("stable" if mm["name"] == stable_member else "canary"),
                    "model_uri": MemberView(m).model_uri,
                    "revision": _labels(m).get(LABEL_REVISION, ""),
                    "run_id": _labels(m).get(LABEL_RUN_ID, ""),
                    "weight": w,
                    "traffic_percent": 0 if stopped or not total else round(100 * w / total),
                    "ready": readiness["ready"],
                    "reason": readiness["reason"],
                    "not_ready": readiness["not_ready"],
                }
            )
            if mm["name"] == stable_member:
                url = MemberView(m).status.get("url") or url
        return revisions, url

    def restore(self, client: KubeClient, holder: Doc, previous: Doc, current: Doc, timeout_s: float) -> None:
        name, namespace = self.spec.service_name, self.spec.namespace
        member_spec = previous.get("member_spec")
        if not member_spec:
            raise PermanentError(f"{name}: the previous stable record has no member spec to restore")
        cur_live = client.get_or_none(LLM_INFERENCE_SERVICES, current.get("member", ""), namespace)
        weight = _weight(cur_live) or 100
        body = copy.deepcopy(member_spec)
        body.setdefault("router", {}).setdefault("route", {})["weight"] = weight
        preset = previous.get("preset")
        preset_labels = {k: v for k, v in (previous.get("labels") or {}).items() if k in _PRESET_LABELS}
        if preset:
            # Its preset went with it (ownerReferences); it comes back first, as register-runtime made it.
            client.apply(
                {
                    "apiVersion": LLMISVC_API,
                    "kind": "LLMInferenceServiceConfig",
                    "metadata": {"name": preset["name"], "namespace": namespace, "labels": preset_labels},
                    "spec": preset["spec"],
                }
            )
        obj = {
            "apiVersion": LLMISVC_API,
            "kind": "LLMInferenceService",
            "metadata": {"name": previous["member"], "namespace": namespace, "labels": previous.get("labels") or {}},
            "spec": body,
        }
        applied = client.apply(obj)
        if preset:
            live_preset = client.get(LLM_INFERENCE_SERVICE_CONFIGS, preset["name"], namespace)
            client.apply(_with_owners(client, self.spec, _owned_shape(live_preset)))
        wait_ready(
            client,
            previous["member"],
            namespace,
            Readiness.llm_inference_service(prefill="prefill" in body, min_generation=_meta(applied).get("generation")),
            timeout_s=timeout_s,
        )
        if cur_live is not None and current.get("member") != previous["member"]:
            client.apply(_llmisvc_from_live(cur_live, weight=0))
            client.delete(LLM_INFERENCE_SERVICES, current["member"], namespace)
