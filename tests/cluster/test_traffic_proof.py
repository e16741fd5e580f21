"""A stepped promotion proves that traffic reaches the canary (Standard mode, Gateway API on and off).

Two real vLLM servers are the stable and the canary predictor; the address map points each
member's Service (``<isvc>-predictor``, ``<isvc>-<canary>-predictor``) at its own server and the
InferenceService's address at a router that sends each request where the upstream-faithful
stand-in says KServe's ingress would (:func:`tests.reconciler.service_backends`): to the stable
predictor only with upstream's default ``enableGatewayApi: false``, by the canary weights with it
on. The gate at each step reads each member's own vLLM request counters around its traffic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest

from llm_rollout.kserve.addresses import ADDRESS_MAP_ENV, address_resolver
from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.gate import traffic_gate
from llm_rollout.kserve.promote import GateFailed, promote
from llm_rollout.kube import INFERENCE_SERVICES
from llm_rollout.validation.traffic import requests_finished
from tests.cluster._support import kube, make_spec, with_runtime
from tests.fixtures.serving import start_vllm, tiny_quality
from tests.serving.relay import LoopbackServer, RelayHandler, hostport

pytestmark = [pytest.mark.cluster, pytest.mark.serving, pytest.mark.timeout(900), pytest.mark.parallel]

NAME = "chat"


class WeightedRouter(LoopbackServer):
    """Relays each request to one backend URL, picked by weight from ``backends()`` per request."""

    def __init__(self, backends: Callable[[], list[tuple[str, int]]]) -> None:
        self.backends = backends
        self.rng = random.Random(13)
        super().__init__()

    def pick(self) -> str:
        choices = [(url, w) for url, w in self.backends() if w > 0]
        with self._lock:
            return self.rng.choices([u for u, _ in choices], weights=[w for _, w in choices])[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        router = self

        class Handler(RelayHandler):
            def do_GET(self) -> None:
                self._relay(b"")

            def do_POST(self) -> None:
                self._relay(self.read_body())

            def _relay(self, body: bytes) -> None:
                conn, resp = self.ask(hostport(router.pick()), body)
                try:
                    if self.streamed(resp):
                        self.start_chunks(resp)
                        while piece := resp.read1(65536):
                            self.chunk(piece)
                        self.end_chunks()
                    else:
                        self.send_whole(resp, resp.read())
                finally:
                    conn.close()

        return Handler


@pytest.fixture(scope="module")
def canary_server(tiny_model, vllm_python, tmp_path_factory):
    """A second real vLLM (the same tiny model, served as ``tiny``): the canary predictor's pod."""
    with start_vllm(tiny_model, "tiny", log_path=tmp_path_factory.mktemp("canary") / "vllm.log") as server:
        yield server


def _spec(namespace: str, probes) -> dict:
    return {
        "model": {"name": "tiny"},
        "runtime": {"max_model_len": 256},
        "canary": {"traffic_percent": 10, "steps": [50, 100]},
        "validation": {
            "readiness_timeout_s": 60,
            "suite_file": str(probes),
            "load": {
                "concurrency": [2],
                "num_prompts": 16,
                "input_words": 16,
                "output_tokens": 8,
                "max_duration_s": 60,
            },
            "slo": {"checks": ["error_rate == 0"], "judge_concurrency": [2], "min_successful_requests": 5},
            "recovery": {"checks": []},
            "quality": tiny_quality(),
        },
    }


def _count(url: str) -> float:
    import httpx

    return requests_finished(httpx.get(url + "/metrics", timeout=10).text) or 0.0


@pytest.fixture
def rollout(kube_cluster, kube_namespace, reconciler, vllm_server, canary_server, tiny_model, monkeypatch):
    """A stable model promoted, then a canary deployed beside it; yields ``(spec, client, record)``."""

    def backends() -> list[tuple[str, int]]:
        resolve = address_resolver()
        return [
            (resolve(f"http://{svc}.{kube_namespace}.svc.cluster.local"), w)
            for svc, w in reconciler.backends_of(NAME, kube_namespace)
        ]

    with WeightedRouter(backends) as router:
        members = (
            f"{NAME}-predictor.{kube_namespace}.svc.cluster.local={vllm_server.base_url},"
            f"{NAME}-*-predictor.{kube_namespace}.svc.cluster.local={canary_server.base_url},"
            f"{NAME}-{kube_namespace}.example.com={router.url}"
        )
        monkeypatch.setenv(ADDRESS_MAP_ENV, members)
        spec = make_spec(kube_namespace, NAME, **_spec(kube_namespace, tiny_model / "probes.json"))
        client = kube(kube_cluster)
        with_runtime(spec, client)
        first = deploy(spec, client, model_uri="s3://models/tiny/v1", run_id="run-1", resolve_url=address_resolver())
        promote(spec, client, first, verdict="pass", summary="ok", run_id="run-1")
        record = deploy(spec, client, model_uri="s3://models/tiny/v2", run_id="run-2", resolve_url=address_resolver())
        assert record.canary and record.stable is not None
        assert record.service_url == router.url
        yield spec, client, record


def test_without_gateway_api_the_first_step_fails_with_the_gateway_api_message_and_rolls_back(
    rollout, reconciler, kube_namespace, vllm_server, canary_server, capsys
):
    spec, client, record = rollout
    before = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    canary_before = _count(canary_server.base_url)
    assert not reconciler.gateway_api  # upstream's default

    with pytest.raises(GateFailed) as failed:
        promote(spec, client, record, verdict="pass", summary="ok", run_id="run-2", gate=traffic_gate(spec, record))

    message = str(failed.value)
    assert failed.value.percent == 50
    assert "no traffic reached the canary" in message
    assert "enableGatewayApi" in message and "inferenceservice-config" in message
    assert f"{record.member} (canary, weight 50%) served 0 of" in message
    assert _count(canary_server.base_url) == canary_before  # nothing reached it through the service
    live = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    assert not live["spec"].get("canary")  # rolled back
    assert live["spec"]["predictor"] == before["spec"]["predictor"]  # the stable predictor untouched
    assert "traffic at 50%: fail" in capsys.readouterr().err


def test_with_gateway_api_the_canary_gets_its_share_and_promotion_proceeds(
    rollout, reconciler, kube_namespace, canary_server, capsys
):
    spec, client, record = rollout
    reconciler.gateway_api = True
    canary_before = _count(canary_server.base_url)

    result = promote(
        spec, client, record, verdict="pass", summary="ok", run_id="run-2", gate=traffic_gate(spec, record)
    )

    assert result.action == "promote"
    live = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    assert live["spec"]["predictor"]["name"] == record.member
    assert _count(canary_server.base_url) > canary_before
    out = capsys.readouterr().err
    assert "traffic at 50%: pass" in out and f"{record.member} (canary, weight 50%) served" in out
    assert "traffic at 100%: pass" in out


def test_without_member_addresses_the_proof_is_skipped_with_the_reason_and_the_gate_judges_as_before(
    kube_namespace, vllm_server, tiny_model, capsys
):
    from llm_rollout.record import DeploymentRecord, StableRef

    doc = {**_spec(kube_namespace, tiny_model / "probes.json"), "llmd": {"enabled": True}, "scaling": None}
    spec = make_spec(kube_namespace, NAME, replicas=1, **doc)
    record = DeploymentRecord(
        platform="kserve",
        kind="LLMInferenceService",
        name=NAME,
        namespace=kube_namespace,
        member=f"{NAME}-v2",
        revision="v2",
        model_uri="s3://models/tiny/v2",
        served_model_name="tiny",
        endpoint_url=vllm_server.base_url,
        service_url=vllm_server.base_url,
        canary=True,
        stable=StableRef(member=f"{NAME}-v1", endpoint_url=vllm_server.base_url),
    )

    verdict, summary = traffic_gate(spec, record)(50)

    assert verdict == "pass", summary
    err = capsys.readouterr().err
    assert "traffic proof skipped: LLMInferenceService members answer through the gateway" in err
    assert "traffic proof skipped" in summary
