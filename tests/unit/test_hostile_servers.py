"""Hostile input, part two: a model server and its ``/metrics`` under an attacker's control (issue 31).

A real HTTP server on 127.0.0.1 (``tests/fixtures/hostile_server.py``) stands in for the hostile
server: never-ending ``/metrics`` and token streams, ``NaN``/``+Inf`` samples, an SSE event whose
JSON is a list. The client side is ours, unchanged: each case ends in a bounded, clear failure of
that one scrape or request, and the validation goes on to a verdict and a report. The API key and
URL passwords are followed to every server and file: only the endpoint's own origin sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import pytest

from kfp_llm_rollout.pipelines.kfp_runs import resolve_token
from llm_rollout.errors import SpecError
from llm_rollout.spec import ValidationSpec
from llm_rollout.validation import pd, prom
from llm_rollout.validation.charts import fmt
from llm_rollout.validation.client import (
    SSE_EVENT_LIMIT,
    STREAM_LIMIT,
    Endpoint,
    build_payload,
    make_client,
    stream_request,
)
from llm_rollout.validation.load import run_load
from llm_rollout.validation.runner import validate
from tests.fixtures.hostile_server import SEND_CAP, HostileServer, in_flight_bytes


def run(coro):
    return asyncio.run(coro)


def _small(**extra) -> ValidationSpec:
    doc = {
        "readiness_timeout_s": 20,
        "smoke_suite": False,
        "load": {"concurrency": [2], "num_prompts": 6, "output_tokens": 4, "input_words": 4, "warmup_requests": 0},
        "slo": {"checks": ["error_rate == 0"], "judge_concurrency": [2], "min_successful_requests": 1},
        "comparison": {"enabled": False},
    }
    for key, value in extra.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return ValidationSpec.model_validate(doc)


# /metrics ---------------------------------------------------------------------------------------


@pytest.mark.timeout(120)  # without the cap the scrape would read forever
def test_a_metrics_body_that_never_ends_fails_that_scrape_within_its_cap():
    async def main(url):
        client = make_client(Endpoint(url, "m"), 2)
        try:
            snap = await prom.scrape(client, url + "/metrics")
            counters = await pd.scrape(client, url + "/metrics")
            return snap, counters
        finally:
            await client.aclose()

    with HostileServer(metrics="endless") as srv:
        snap, counters = run(main(srv.url))
    for error in (snap.error, counters.error):
        assert "larger than 16 MiB" in error and "not read" in error, error
    assert max(srv.sent) < prom.METRICS_LIMIT + in_flight_bytes() < SEND_CAP, "the client stopped reading at its cap"
    assert snap.values == {} and counters.values == {}


def test_nan_and_inf_in_metrics_are_named_and_the_proofs_that_read_them_are_inconclusive():
    async def main(url):
        client = make_client(Endpoint(url, "m"), 2)
        try:
            return await prom.scrape(client, url + "/metrics"), await pd.scrape(client, url + "/metrics")
        finally:
            await client.aclose()

    with HostileServer(metrics="nonfinite") as srv:
        snap, counters = run(main(srv.url))
    assert snap.error == ""
    assert snap.nonfinite["vllm:num_requests_running"] == "NaN"
    assert snap.nonfinite["vllm:prompt_tokens_total"] == "+Inf"
    assert "prompt_tokens" not in snap.values and snap.values["generation_tokens"] == 20
    view = prom.server_view(snap, snap)
    assert any("non-finite" in e and "vllm:prompt_tokens_total=+Inf" in e for e in view["errors"]), view
    json.dumps(view, allow_nan=False)  # nothing non-finite reaches the results file
    assert "non-finite" in counters.error and "+Inf" in counters.error
    proof = pd.judge_disaggregation(
        {"prefill": counters, "decode": counters}, {"prefill": counters, "decode": counters}
    )
    assert proof.verdict == "inconclusive" and "non-finite" in " ".join(proof.reasons)
    assert fmt(float("inf")) == "+Inf" and fmt(float("-inf")) == "-Inf"


def test_a_validation_against_a_server_with_nonfinite_metrics_ends_in_a_verdict_and_a_report(tmp_path):
    with HostileServer(metrics="nonfinite") as srv:
        res = validate(_small(), srv.url, "m", report_dir=tmp_path, log=lambda line: None)
    assert res.verdict in ("pass", "fail", "inconclusive")
    assert (tmp_path / "report.html").is_file() and (tmp_path / "validation.json").is_file()
    data = json.loads((tmp_path / "validation.json").read_text())
    assert "non-finite" in json.dumps(data)


# Token streams ----------------------------------------------------------------------------------


def _one_stream(url: str):
    async def main():
        ep = Endpoint(url, "m")
        client = make_client(ep, 1)
        try:
            payload = json.dumps(build_payload("completions", "m", "hi", 4)).encode()
            return await stream_request(client, ep, "completions", payload, collect_text=True)
        finally:
            await client.aclose()

    return run(main())


@pytest.mark.timeout(120)  # without the caps the stream would be read forever
@pytest.mark.parametrize(("mode", "reason"), [("endless", "262144 token events"), ("endless_big", "64 MiB")])
def test_a_token_stream_that_never_ends_fails_that_request_at_a_cap(mode, reason):
    with HostileServer(stream=mode) as srv:
        rec = _one_stream(srv.url)
        time.sleep(0.2)
        sent = max(srv.sent)
    assert not rec.success and reason in rec.error and "cut" in rec.error, rec.error
    assert sent < STREAM_LIMIT + in_flight_bytes() < SEND_CAP and len(rec.generated_text) < STREAM_LIMIT


def test_one_event_that_never_ends_fails_that_request_at_the_event_cap():
    with HostileServer(stream="event_endless") as srv:
        rec = _one_stream(srv.url)
        time.sleep(0.2)
        sent = max(srv.sent)
    assert not rec.success and "without ending" in rec.error, rec.error
    assert sent < SSE_EVENT_LIMIT + in_flight_bytes() < SEND_CAP


def test_an_event_whose_json_is_a_list_is_one_failed_request_not_a_crash():
    async def main(url):
        ep = Endpoint(url, "m")
        client = make_client(ep, 2)
        try:
            return await run_load(client, ep, ["a b c"], output_tokens=4, num_requests=8, concurrency=2)
        finally:
            await client.aclose()

    with HostileServer(stream="list_event") as srv:
        level = run(main(srv.url))
    failed = [r for r in level.records if not r.success]
    assert len(level.records) == 8 and len(failed) == 4, [r.error for r in level.records]
    assert all("malformed stream" in r.error and "list, not an object" in r.error for r in failed)


# The API key and URL credentials ----------------------------------------------------------------


def test_the_api_key_goes_only_to_the_endpoints_own_origin(tmp_path, monkeypatch):
    key = "sk-hostile-test-0123456789"
    monkeypatch.setenv("LLM_ROLLOUT_TEST_KEY", key)
    bearer = f"Bearer {key}"
    with HostileServer() as endpoint, HostileServer() as other:
        spec = _small(
            api_key_env="LLM_ROLLOUT_TEST_KEY",
            recovery={"base_url": other.url, "checks": []},
            metrics_urls={"server": endpoint.url + "/metrics", "decode": other.url + "/metrics"},
        )
        lines: list[str] = []
        validate(spec, endpoint.url, "m", report_dir=tmp_path / "off", log=lines.append)
        assert endpoint.authorizations() == {bearer}, "every request to the endpoint, /metrics included"
        assert [s for s in other.seen if s[1].startswith("/v1/")], "the original was asked (readiness, agreement)"
        assert [s for s in other.seen if s[1] == "/metrics"], "the other role's /metrics was scraped"
        assert other.authorizations() == {None}, "another origin never sees the key"
        other.seen.clear()

        # The control: the field that allows it sends the key to the original (not to /metrics there).
        allowed = spec.model_copy(update={"recovery": spec.recovery.model_copy(update={"send_api_key": True})})
        validate(allowed, endpoint.url, "m", log=lines.append)
        assert {a for _, p, a in other.seen if p.startswith("/v1/")} == {bearer}
        assert {a for _, p, a in other.seen if p == "/metrics"} == {None}
    files = [p.read_text() for p in (tmp_path / "off").rglob("*") if p.is_file()]
    assert files and not any(key in text for text in [*files, *lines])


def test_a_password_in_a_url_is_sent_to_that_server_only_and_shown_nowhere(tmp_path):
    password = "pw-hostile-0123"
    with HostileServer() as endpoint, HostileServer() as other:
        with_creds = endpoint.url.replace("http://", f"http://alice:{password}@")
        base = other.url.replace("http://", f"http://bob:{password}x@")
        lines: list[str] = []
        spec = _small(recovery={"base_url": base, "checks": []})
        res = validate(spec, with_creds, "m", report_dir=tmp_path, log=lines.append)
        assert {a for _, p, a in endpoint.seen if p.startswith("/v1/")} == {"Basic YWxpY2U6cHctaG9zdGlsZS0wMTIz"}
        assert "Basic Ym9iOnB3LWhvc3RpbGUtMDEyM3g=" in other.authorizations()
    texts = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert len(texts) >= 2
    shown = [*texts, *lines, res.summary]  # the report and results files, the log, the step's summary
    assert not [t for t in shown if password in t]
    assert any("127.0.0.1" in line for line in lines)


def _token_args(**kw):
    base = {"host": "https://kfp.example.com", "token": None, "token_file": None, "token_env": None}
    return argparse.Namespace(**{**base, **kw})


def test_submit_takes_its_token_from_a_file_or_a_variable_and_says_what_is_unsafe(tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    assert resolve_token(_token_args(token_file=str(token_file))) == "tok-from-file"
    monkeypatch.setenv("KFP_TEST_TOKEN", "tok-from-env")
    assert resolve_token(_token_args(token_env="KFP_TEST_TOKEN")) == "tok-from-env"
    assert capsys.readouterr().err == ""
    assert resolve_token(_token_args(token="tok-argv")) == "tok-argv"
    assert "visible" in capsys.readouterr().err
    resolve_token(_token_args(host="http://kfp.example.com", token_env="KFP_TEST_TOKEN"))
    assert "plain http" in capsys.readouterr().err
    resolve_token(_token_args(host="http://localhost:8080", token_env="KFP_TEST_TOKEN"))  # a port-forward
    assert capsys.readouterr().err == ""
    with pytest.raises(SpecError) as info:
        resolve_token(_token_args(token_file="/dev/zero"))
    assert info.value.field == "--token-file" and "not a regular file" in info.value.problem
    with pytest.raises(SpecError):
        resolve_token(_token_args(token="a", token_env="KFP_TEST_TOKEN"))
