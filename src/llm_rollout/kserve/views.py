"""Typed read-only views over the live KServe objects the server returns.

The server sends plain dicts in which any level may be missing (a status not written yet, a
predictor without labels). These views answer the questions the variants ask of an
``InferenceService``, its predictor and an llm-d ``LLMInferenceService`` member, each once, so the
code above them reads ``view.predictor.model_uri`` instead of a chain of ``.get(...) or {}``.
Field names follow KServe's types (``pkg/apis/serving/v1beta1/inference_service_status.go``,
``v1alpha2/llm_inference_service_types.go``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from llm_rollout.kserve.builders import LABEL_REVISION, LABEL_RUN_ID, STOP_ANNOTATION


def dig(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a level is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _url(obj: Any) -> str | None:
    """A status entry's ``url``, else its ``address.url`` (KServe writes either)."""
    return dig(obj, "url") or dig(obj, "address", "url")


class ObjectView:
    """What every live object has: metadata, spec and status."""

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj: dict[str, Any] = obj or {}

    @property
    def meta(self) -> dict[str, Any]:
        return _dict(self.obj.get("metadata"))

    @property
    def name(self) -> str:
        return self.meta.get("name", "")

    @property
    def labels(self) -> dict[str, str]:
        return dict(_dict(self.meta.get("labels")))

    @property
    def annotations(self) -> dict[str, str]:
        return dict(_dict(self.meta.get("annotations")))

    @property
    def generation(self) -> int | None:
        return self.meta.get("generation")

    @property
    def resource_version(self) -> str | None:
        return self.meta.get("resourceVersion")

    @property
    def spec(self) -> dict[str, Any]:
        return _dict(self.obj.get("spec"))

    @property
    def status(self) -> dict[str, Any]:
        return _dict(self.obj.get("status"))


class PredictorView:
    """A predictor spec (the stable one, or a ``spec.canary[]`` entry's)."""

    def __init__(self, pred: dict[str, Any] | None) -> None:
        self.pred: dict[str, Any] = pred or {}

    @property
    def model_uri(self) -> str:
        return dig(self.pred, "model", "storageUri") or ""

    @property
    def run_id(self) -> str:
        return dig(self.pred, "labels", LABEL_RUN_ID) or ""

    @property
    def revision(self) -> str:
        """The revision id on the predictor's own labels (the InferenceService's stay the same)."""
        return dig(self.pred, "labels", LABEL_REVISION) or ""

    @property
    def canary_traffic_percent(self) -> int | None:
        """Knative mode's ``canaryTrafficPercent`` (None: no canary in the predictor)."""
        pct = self.pred.get("canaryTrafficPercent")
        return None if pct is None else int(pct)


class InferenceServiceView(ObjectView):
    """A live ``InferenceService``."""

    @property
    def predictor(self) -> dict[str, Any]:
        return _dict(self.spec.get("predictor"))

    @property
    def canaries(self) -> list[dict[str, Any]]:
        """The ``spec.canary[]`` entries (Standard mode)."""
        return list(self.spec.get("canary") or [])

    def canary_entry(self, member: str) -> dict[str, Any] | None:
        """The ``spec.canary[]`` entry whose predictor is ``member``."""
        return next((e for e in self.canaries if dig(e, "predictor", "name") == member), None)

    def other_canaries(self, member: str) -> list[dict[str, Any]]:
        """The ``spec.canary[]`` entries of other members."""
        return [e for e in self.canaries if dig(e, "predictor", "name") != member]

    @property
    def url(self) -> str | None:
        """The service's address (``status.url`` or ``status.address.url``)."""
        return _url(self.status)

    @property
    def predictor_status(self) -> dict[str, Any]:
        return _dict(dig(self.status, "components", "predictor"))

    @property
    def predictor_url(self) -> str | None:
        """The stable predictor's own address (``status.components.predictor``), else the service's."""
        pred = self.predictor_status
        return pred.get("url") or pred.get("restUrl") or dig(pred, "address", "url") or self.url

    @property
    def traffic(self) -> list[dict[str, Any]]:
        """Knative's traffic split (``status.components.predictor.traffic``)."""
        return list(self.predictor_status.get("traffic") or [])

    @property
    def canary_statuses(self) -> dict[str, dict[str, Any]]:
        """``status.canaryStatuses`` by canary name (Standard mode)."""
        return {c.get("name"): c for c in self.status.get("canaryStatuses") or []}

    def tagged(self, tag: str) -> dict[str, Any] | None:
        """Knative's traffic target with ``tag`` (``latest``, ``prev``), or None."""
        return next((t for t in self.traffic if t.get("tag") == tag), None)

    @property
    def address_host(self) -> str | None:
        """The host of ``status.address.url`` (the entry Service's cluster-local name, ``createAddress``)."""
        url = dig(self.status, "address", "url")
        return urlsplit(url).hostname if isinstance(url, str) and url else None


class MemberView(ObjectView):
    """A live llm-d ``LLMInferenceService`` member."""

    @property
    def weight(self) -> int:
        """Its ``router.route.weight`` in the group (0 when unset)."""
        return int(dig(self.obj, "spec", "router", "route", "weight") or 0)

    @property
    def model_uri(self) -> str:
        return dig(self.obj, "spec", "model", "uri") or ""

    @property
    def stopped(self) -> bool:
        """Stopped with ``serving.kserve.io/stop``."""
        return STOP_ANNOTATION in self.annotations

    @property
    def url(self) -> str | None:
        """Its address: ``status.url``, ``status.address.url`` or the first of ``status.addresses``."""
        found = _url(self.status)
        if found:
            return found
        return next((a["url"] for a in self.status.get("addresses") or [] if a.get("url")), None)
