"""The HTML report in a real browser (Debian's headless Chromium): it renders, and model text cannot run.

The report comes from a real validation of the tiny model through a proxy that puts
``<script>document.title="pwned"</script>`` into every non-streamed completion and into the body
of the HTTP 500s it injects. A script that ran would change the page title; the DOM Chromium
dumps after loading shows it did not - also with the page's Content-Security-Policy removed, so
it is the escaping that holds, not only the policy. A control page proves the check can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llm_rollout.spec import parse_spec
from llm_rollout.validation import validate
from tests.fixtures.serving import tiny_quality
from tests.serving.flaky_proxy import INJECTED, FlakyProxy

pytest_plugins = ["tests.fixtures.serving"]
pytestmark = [pytest.mark.serving, pytest.mark.timeout(300), pytest.mark.parallel]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium() -> str:
    """Debian's chromium; a missing browser is a setup failure, not a skip."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail("no headless browser: install Debian's chromium (`apt-get install -y chromium`)", pytrace=False)
    return path


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM after the page loaded (scripts, had any run, would have changed it)."""
    return run_chromium(page, profile, "--dump-dom").stdout


def title_of(dom: str) -> str:
    m = re.search(r"<title>(.*?)</title>", dom, re.S)
    return m.group(1) if m else ""


@pytest.fixture(scope="module")
def hostile_report(vllm_server, tmp_path_factory) -> Path:
    """A real report whose completions and server error bodies carry a <script>."""
    out = tmp_path_factory.mktemp("hostile-report")
    spec = parse_spec(
        {
            "validation": {
                "load": {"concurrency": [1, 2], "num_prompts": 15, "output_tokens": 8, "input_words": 8},
                "slo": {"checks": ["p95_ttft_ms <= 1500", "error_rate == 0"], "judge_concurrency": [2]},
                "quality": tiny_quality(),
            }
        }
    ).validation
    with FlakyProxy(vllm_server.base_url, fail_every=5, inject=True) as proxy:

        def log(line: str) -> None:
            if "validate: correctness" in line:
                proxy.arm()

        result = validate(spec, proxy.url, "tiny", report_dir=out, log=log)
    assert result.verdict == "fail"
    assert any(INJECTED in p.text for p in result.correctness), "the completions really carry the script"
    assert any("pwned" in e for lv in result.levels for e in lv.errors), "so do the 500 bodies"
    return result.report_html


def test_report_renders_with_its_tables_and_plots(hostile_report, tmp_path):
    dom = dump_dom(hostile_report, tmp_path / "profile")
    assert title_of(dom) == "Validation fail: tiny"
    for heading in ("SLO checks", "Load levels", "Request errors", "Correctness", "Server view"):
        assert f"<h2>{heading}" in dom, heading
    assert dom.count("<table") >= 5
    assert dom.count("<svg") >= 6
    assert 'id="verdict"' in dom and ">FAIL<" in dom
    shot = tmp_path / "report.png"
    run_chromium(hostile_report, tmp_path / "profile2", "--window-size=1280,2000", f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000, "a rendered page, not a blank one"


def test_model_text_in_the_report_does_not_execute(hostile_report, tmp_path):
    page = hostile_report.read_text()
    assert "default-src 'none'" in page
    no_policy = tmp_path / "no-csp.html"
    no_policy.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page))
    assert "Content-Security-Policy" not in no_policy.read_text()
    for candidate in (hostile_report, no_policy):
        dom = dump_dom(candidate, tmp_path / f"profile-{candidate.stem}")
        assert "pwned" not in title_of(dom), f"a script from model output ran in {candidate.name}"
        assert not re.search(r"<script", dom, re.I), "no script element made it into the DOM"
        assert "&lt;script&gt;document.title=" in dom, "the model's text is shown, as text"


def test_control_an_unescaped_script_would_be_caught(tmp_path):
    page = tmp_path / "control.html"
    page.write_text(f"<!DOCTYPE html><html><head><title>Validation</title></head><body>{INJECTED}</body></html>")
    assert title_of(dump_dom(page, tmp_path / "profile")) == "pwned"
