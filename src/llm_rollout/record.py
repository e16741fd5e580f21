"""The deployment record: the small JSON contract passed between pipeline steps.

deploy-model writes it; validate-deployment, promote-model and rollback read it. It names exactly
what was rolled out and what was stable before, so that every later step (and a restarted one)
acts on the same objects without guessing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StableRef(BaseModel):
    """What served production before this rollout.

    Attributes:
        member: Predictor name (InferenceService), member object name (LLMInferenceService) or
            local server id that was stable.
        model_uri: The stable model's URI.
        revision: The stable model's revision id.
        resource_version: resourceVersion of the stable object when the rollout began; promotion
            refuses to act if someone else changed it meanwhile.
        endpoint_url: Where the stable revision serves.
        generation: metadata.generation of the stable object when the rollout began (status
            writes bump resourceVersion but not generation, so promotion compares this).
    """

    model_config = ConfigDict(extra="forbid")

    member: str
    model_uri: str = ""
    revision: str = ""
    resource_version: str | None = None
    endpoint_url: str | None = None
    generation: int | None = None


class DeploymentRecord(BaseModel):
    """One rollout of one model revision.

    Attributes:
        platform: ``kserve`` or ``local``.
        kind: ``InferenceService``, ``LLMInferenceService`` or ``LocalServer``.
        name: The service name (what clients address).
        namespace: Kubernetes namespace (``local`` on the local platform).
        member: The new revision's own object/predictor/server name.
        revision: Short id of the new model revision.
        model_uri: The new model's URI as served.
        served_model_name: ``model`` name clients send.
        endpoint_url: Address of the new revision itself (validation measures only this).
        service_url: Address of the service as a whole (what production traffic uses).
        generation: metadata.generation of the object after the rollout was applied.
        canary: The new revision was added beside a stable one (not a first rollout).
        traffic_percent: Traffic share the new revision got while being validated.
        stable: What was stable before (None on a first rollout).
        run_id: The pipeline run that made it.
        artifact_digest: Digest of the model artifact, when known.
        metrics_urls: Prometheus endpoints of the new revision (per role for llm-d).
        already_promoted: The model is already the stable revision: nothing was rolled out, and
            validate/promote/rollback end as "already promoted" without touching anything.
    """

    model_config = ConfigDict(extra="forbid")

    platform: Literal["kserve", "local"]
    kind: Literal["InferenceService", "LLMInferenceService", "LocalServer"]
    name: str
    namespace: str
    member: str
    revision: str
    model_uri: str
    served_model_name: str
    endpoint_url: str
    service_url: str | None = None
    generation: int | None = None
    canary: bool = False
    traffic_percent: int = 0
    stable: StableRef | None = None
    run_id: str = ""
    artifact_digest: str | None = None
    metrics_urls: dict[str, str] = Field(default_factory=dict)
    already_promoted: bool = False

    def to_json(self) -> str:
        """Serialises the record for a KFP string parameter."""
        return self.model_dump_json()

    @classmethod
    def coerce(cls, record: DeploymentRecord | dict | str) -> DeploymentRecord:
        """A record from a record, its dict or its JSON text (what KFP passes to a step).

        Raises:
            PermanentError: The record is empty (deploy-model did not finish).
        """
        if isinstance(record, DeploymentRecord):
            return record
        if isinstance(record, dict):
            return cls.model_validate(record)
        if not record:
            from llm_rollout.errors import PermanentError

            raise PermanentError("the deployment record is empty: deploy-model did not finish; nothing to act on")
        return cls.from_json(record)

    @classmethod
    def from_json(cls, text: str) -> DeploymentRecord:
        """Parses a record written by :meth:`to_json`."""
        return cls.model_validate_json(text)
