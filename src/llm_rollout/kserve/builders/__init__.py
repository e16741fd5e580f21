"""Pure builders: rollout spec in, plain KServe object (a dict) out.

No I/O, no clients, no clocks: the same spec always renders the same objects, which is what the
files in ``manifests/`` are (a test keeps them in sync) and what the kube layer applies with
server-side apply. Every object carries the same labels so that it can be found again by name or
by selector, and every name comes from :mod:`llm_rollout.names`.

- :mod:`.common`: API versions, labels, the :class:`Member` a revision is, shared metadata and probes;
- :mod:`.isvc`: the ``ServingRuntime`` and the ``InferenceService``;
- :mod:`.llmd`: the llm-d ``LLMInferenceService`` members, preset and endpoint-picker configuration;
- :mod:`.rbac`: the RBAC the steps need, and :func:`render_all` for ``manifests/``.
"""

from __future__ import annotations

from llm_rollout.kserve.builders.common import (
    ANNOTATION_PREFIX,
    GROUP,
    ISVC_API,
    LABEL_MEMBER,
    LABEL_REVISION,
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_SERVICE,
    LLMISVC_API,
    MANAGED_BY,
    MODEL_MOUNT,
    RUNTIME_API,
    STOP_ANNOTATION,
    Member,
    default_member,
    run_label,
)
from llm_rollout.kserve.builders.isvc import (
    CANARY_FORBIDDEN,
    inference_service,
    predictor_member,
    promoted_predictor,
    serving_runtime,
)
from llm_rollout.kserve.builders.llmd import (
    EPP_API_VERSION,
    check_member_name,
    endpoint_picker_config,
    kv_transfer_config,
    llm_inference_service,
    llm_inference_service_config,
    owner_reference,
    preset_name,
    vllm_additional_args,
)
from llm_rollout.kserve.builders.rbac import CRD_READER_RULES, RBAC_RULES, llmd_example_spec, rbac, render_all

__all__ = [
    "ANNOTATION_PREFIX",
    "CANARY_FORBIDDEN",
    "CRD_READER_RULES",
    "EPP_API_VERSION",
    "GROUP",
    "ISVC_API",
    "LABEL_MEMBER",
    "LABEL_REVISION",
    "LABEL_ROLE",
    "LABEL_RUN_ID",
    "LABEL_SERVICE",
    "LLMISVC_API",
    "MANAGED_BY",
    "MODEL_MOUNT",
    "RBAC_RULES",
    "RUNTIME_API",
    "STOP_ANNOTATION",
    "Member",
    "check_member_name",
    "default_member",
    "endpoint_picker_config",
    "inference_service",
    "kv_transfer_config",
    "llm_inference_service",
    "llm_inference_service_config",
    "llmd_example_spec",
    "owner_reference",
    "predictor_member",
    "preset_name",
    "promoted_predictor",
    "rbac",
    "render_all",
    "run_label",
    "serving_runtime",
    "vllm_additional_args",
]
