"""Renders the builders' objects to the YAML files in ``manifests/``.

``llm-rollout render`` writes them; a test renders the default spec again and fails when the
committed files drift from the builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llm_rollout.builders import render_all
from llm_rollout.spec import RolloutSpec

_HEADERS = {
    "vllm-runtime.yaml": """\
# The namespaced vLLM ServingRuntime (serving.kserve.io/v1alpha1), rendered from the default spec.
# Upstream vLLM OpenAI server on port 8080, model at /mnt/models, served under the
# InferenceService's name. Serving-design defaults: --gpu-memory-utilization=0.9,
# --kv-cache-dtype=fp8 (needs compute capability 8.9+; the spec refuses it for a declared
# Ampere GPU), --tensor-parallel-size = GPUs per replica. Probes hit /v1/models; the startup
# probe allows 30 minutes for large models.
""",
    "kserve-inferenceservice.yaml": """\
# The InferenceService (serving.kserve.io/v1beta1) for a first rollout, rendered from the default
# spec: Standard deployment mode, one A10G-class GPU per replica (16-32 GiB, 4-8 CPUs), 1-10
# replicas scaled by KEDA on vLLM's request rate. A later rollout adds the new model as a
# spec.canary[] entry beside this predictor and leaves the predictor untouched until promotion.
""",
    "llm-d-configuration.yaml": """\
# llm-d disaggregated serving through KServe's LLMInferenceService (serving.kserve.io/v1alpha2).
# Which knob does what:
#   LLMInferenceServiceConfig  the team-wide preset that members reference with spec.baseRefs:
#                              image and container hardening shared by every member.
#   spec.replicas/parallelism  the decode role (top-level template): 2 replicas, tensor parallel 1.
#   spec.prefill               the prefill role, scaled independently of decode. Its tensor
#                              parallel must not exceed decode's (NIXL cannot map it).
#   VLLM_ADDITIONAL_ARGS       --kv_transfer_config with NixlConnector on both roles: kv_producer on
#                              prefill, kv_consumer on decode. KServe does not add it by itself;
#                              without it P/D silently falls back to decode-only.
#   VLLM_NIXL_SIDE_CHANNEL_HOST the pod IP (status.podIP), where NIXL's side channel listens.
#   router.scheduler           the endpoint picker with an inline EndpointPickerConfig:
#                              prefix-cache-scorer (weight 3) sends prompts that share a prefix
#                              (RAG) to the pod holding its KV cache; queue and KV-utilisation
#                              scorers balance load; pd-profile-handler sends prompts with at
#                              least `threshold` uncached tokens through a prefill pod first.
#   router.route.group/weight  stable and canary members share a group and split traffic by
#                              weight; promotion shifts the weight (e.g. 10 -> 50 -> 100).
#   router.gateway {}          KServe's default Gateway; name gateways in llmd.gateway_refs.
""",
    "rbac.yaml": """\
# Least privilege for the pipeline steps: exactly the verbs and resources the library calls (a
# cluster test records every call and compares), in one namespace. The only cluster-scoped grant
# is `get` on KServe's three CRDs by name, for the version preflight.
""",
}


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Dumps objects as a multi-document YAML stream, keys in builder order, no anchors."""
    return yaml.dump_all(objects, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False, width=100)


def render_manifests(spec: RolloutSpec) -> dict[str, str]:
    """The text of every manifest file for ``spec``, by file name."""
    return {name: _HEADERS[name] + to_yaml(objs) for name, objs in render_all(spec).items()}


def write_manifests(spec: RolloutSpec, out_dir: str | Path) -> list[Path]:
    """Writes every manifest file into ``out_dir`` and returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_manifests(spec).items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths
