"""Correctness probes and greedy token agreement with a baseline.

Readiness (is the endpoint serving at all) is :mod:`llm_rollout.validation.readiness`.

Correctness (:func:`run_suite`): greedy (temperature 0), non-streamed requests, each judged
against its expectations (a probe marked ``must_pass`` fails the gate on its own; the others are
scored as a proportion: :mod:`llm_rollout.validation.phases` and
:func:`~llm_rollout.validation.compare.judge_quality`):

* ``exact``: the completion equals the text (``expected`` is accepted as a synonym, so the tiny
  model's ``probes.json`` loads as a suite of exact probes);
* ``contains``: the completion contains each text;
* ``regex``: Python ``re.search`` finds the pattern;
* ``json``: the completion (stripped) parses as JSON - checked on plain decoding, no JSON mode;
* ``finish_reason``: one of the given stop reasons (``stop``, ``length``);
* ``non_empty``: the completion has non-whitespace text.

The built-in smoke suite (:func:`run_smoke`) holds for any healthy model: a completion of exactly
``max_tokens`` tokens with ``ignore_eos`` (non-empty, ``finish_reason`` ``length``, usage agrees),
greedy determinism (the same prompt twice gives the same text) and stream/non-stream agreement
(the streamed text equals the non-streamed one). With the chat endpoint configured, one chat
completion must answer too.

Baseline agreement (:func:`token_agreement`): the same prompts, greedy, on the new and the
baseline endpoint through ``/v1/completions`` with ``logprobs: 1``, whose ``logprobs.tokens`` lists
the generated tokens as strings. Position ``i`` agrees when both sequences have the same token
there; a prompt's agreement is agreeing positions / the longer sequence's length, and the overall
value is weighted by tokens (sum of agreeing positions / sum of lengths). Token *strings* are
compared, so both endpoints must use the same tokenizer (as a quantized model and its original do).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llm_rollout.bounded import load_yaml, loads_json, read_regular_file
from llm_rollout.errors import PermanentError, SpecError, TransientError
from llm_rollout.validation.client import Api, Endpoint, build_payload, post_json, stream_request

FINISH_REASONS = ("stop", "length")
DEFAULT_PROBE_MAX_TOKENS = 32
SUITE_FILE_LIMIT = 16 * 1024 * 1024
"""Bytes a correctness suite file may have."""
_META_KEYS = frozenset({"margin", "description", "note", "notes", "comment", "tags", "id"})
_PROBE_KEYS = frozenset(
    {
        "name",
        "prompt",
        "max_tokens",
        "chat",
        "exact",
        "expected",
        "contains",
        "regex",
        "json",
        "finish_reason",
        "non_empty",
        "must_pass",
    }
)
SMOKE_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "one two three four five",
    "Once upon a time",
)
"""Neutral prompts of the smoke suite (and of the baseline agreement when no suite is given)."""


@dataclass
class Probe:
    """One correctness probe: a prompt and what its greedy completion must satisfy.

    Attributes:
        name: Short name shown in reports.
        prompt: The prompt (a user message when ``chat``).
        max_tokens: Output tokens asked for.
        chat: Use ``/v1/chat/completions`` instead of ``/v1/completions``.
        exact: The whole completion must equal this.
        contains: The completion must contain each of these.
        regex: ``re.search`` must find this pattern.
        json: The completion must parse as JSON.
        finish_reason: Allowed finish reasons.
        non_empty: The completion must have non-whitespace text.
        source: Where the probe came from (``smoke``, a file path, ``argument``).
        must_pass: A failure fails the gate on its own. Other probes are *scored*: the suite's
            share right is held against ``validation.suite_min_score`` on a first rollout, and
            compared item by item with the stable revision's (McNemar's exact test) otherwise.
    """

    name: str
    prompt: str
    max_tokens: int = DEFAULT_PROBE_MAX_TOKENS
    chat: bool = False
    exact: str | None = None
    contains: list[str] = field(default_factory=list)
    regex: str | None = None
    json: bool = False
    finish_reason: list[str] | None = None
    non_empty: bool = False
    source: str = "argument"
    must_pass: bool = False

    def expectations(self) -> list[str]:
        """The probe's expectations as short human-readable phrases."""
        out = []
        if self.exact is not None:
            out.append(f"exact {self.exact!r}")
        out += [f"contains {c!r}" for c in self.contains]
        if self.regex is not None:
            out.append(f"regex {self.regex!r}")
        if self.json:
            out.append("valid JSON")
        if self.finish_reason:
            out.append(f"finish_reason in {self.finish_reason}")
        if self.non_empty:
            out.append("non-empty")
        return out


@dataclass
class ProbeResult:
    """The outcome of one probe.

    Attributes:
        name: The probe's name.
        source: Where it came from.
        passed: Every expectation held.
        failures: One line per expectation that did not hold, each ``<kind>: <detail>`` (kind
            ``exact``, ``contains``, ``regex``, ``json``, ``finish_reason``, ``non_empty``,
            ``request``...); the detail may quote the completion.
        prompt: The prompt (kept for the report; logged only with ``log_text``).
        text: The completion.
        finish_reason: The finish reason the server gave.
        expectations: What was expected.
        must_pass: A failure fails the gate on its own (the smoke checks and probes marked so);
            otherwise the probe is scored (see :class:`Probe`).
    """

    name: str
    source: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    prompt: str = ""
    text: str = ""
    finish_reason: str | None = None
    expectations: list[str] = field(default_factory=list)
    must_pass: bool = False

    def failed_checks(self) -> list[str]:
        """The kinds of expectation that failed (``exact``, ``regex``, ``request``...), without any text."""
        return sorted({line.split(":", 1)[0] for line in self.failures})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (with ``failed_checks``)."""
        return {**asdict(self), "failed_checks": self.failed_checks()}


def tally_line(passed: int, total: int) -> str:
    """How many probes passed, as the correctness phase and the gate's question both say it."""
    return f"{passed}/{total} probes passed"


def failure_line(name: str, detail: str) -> str:
    """One failed probe with what failed (its check kinds, or the failure lines with ``log_text``)."""
    return f"{name} failed ({detail})"


# Suites -----------------------------------------------------------------------------------------


def _as_str_list(value: Any, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SpecError(f"{where}.{key}", f"must be a string or a list of strings, got {value!r}", f"e.g. {key}: stop")


def parse_probe(item: Any, where: str, source: str) -> Probe:
    """Builds one probe from a suite entry, strictly.

    Args:
        item: The entry (a mapping).
        where: Its location for messages, e.g. ``suite.yaml[2]``.
        source: The suite's name.

    Returns:
        The probe.

    Raises:
        SpecError: A missing prompt, an unknown key, a wrong type, a bad regex or no expectation.
    """
    if not isinstance(item, dict):
        raise SpecError(
            where, f"a probe must be a mapping, got {type(item).__name__}", "write {prompt: ..., exact: ...}"
        )
    unknown = sorted(k for k in item if k not in _PROBE_KEYS and k not in _META_KEYS and not str(k).startswith("x-"))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", "unknown probe key", f"use one of {', '.join(sorted(_PROBE_KEYS))}")
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise SpecError(f"{where}.prompt", "missing or not a non-empty string", "give the prompt text")
    max_tokens = item.get("max_tokens", DEFAULT_PROBE_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise SpecError(f"{where}.max_tokens", f"must be a positive integer, got {max_tokens!r}", "e.g. max_tokens: 16")
    if "exact" in item and "expected" in item:
        raise SpecError(f"{where}.expected", "both exact and expected given", "they are synonyms; keep one")
    exact = item.get("exact", item.get("expected"))
    if exact is not None and not isinstance(exact, str):
        raise SpecError(f"{where}.exact", f"must be a string, got {exact!r}", "quote the expected completion")
    regex = item.get("regex")
    if regex is not None:
        if not isinstance(regex, str):
            raise SpecError(f"{where}.regex", f"must be a string, got {regex!r}", "quote the pattern")
        try:
            re.compile(regex)
        except re.error as err:
            raise SpecError(f"{where}.regex", f"not a valid regular expression: {err}", "fix the pattern") from None
    for key in ("json", "chat", "non_empty", "must_pass"):
        if key in item and not isinstance(item[key], bool):
            raise SpecError(f"{where}.{key}", f"must be true or false, got {item[key]!r}", f"{key}: true")
    reasons = _as_str_list(item["finish_reason"], where, "finish_reason") if "finish_reason" in item else None
    if reasons:
        bad = [r for r in reasons if r not in FINISH_REASONS]
        if bad:
            raise SpecError(f"{where}.finish_reason", f"unknown finish reason {bad[0]!r}", "use stop or length")
    probe = Probe(
        name=str(item.get("name") or where),
        prompt=prompt,
        max_tokens=max_tokens,
        chat=bool(item.get("chat", False)),
        exact=exact,
        contains=_as_str_list(item["contains"], where, "contains") if "contains" in item else [],
        regex=regex,
        json=bool(item.get("json", False)),
        finish_reason=reasons,
        non_empty=bool(item.get("non_empty", False)),
        source=source,
        must_pass=bool(item.get("must_pass", False)),
    )
    if not probe.expectations():
        raise SpecError(
            where, "the probe has no expectation", "add exact, contains, regex, json, finish_reason or non_empty"
        )
    return probe


def load_suite(path: str | Path) -> list[Probe]:
    """Loads a user suite: JSONL (``*.jsonl``, a probe a line), or YAML/JSON (a list, or ``{probes: [...]}``).

    The tiny model's ``suite.jsonl`` (``{name, prompt, exact, max_tokens}`` a line) and its
    ``probes.json`` (``[{prompt, expected, max_tokens, margin}]``) load as suites of ``exact`` probes.

    Args:
        path: The suite file.

    Returns:
        The probes.

    Raises:
        SpecError: The file is missing, unparsable, empty, or an entry is invalid.
    """
    p = Path(path).expanduser()
    # A regular file of bounded size, YAML (JSON is YAML) without aliases or deep nesting (issue 31).
    raw = read_regular_file(p, "validation.suite_file", SUITE_FILE_LIMIT, "YAML/JSON suite")
    if p.suffix == ".jsonl":
        data = [
            loads_json(line, f"validation.suite_file ({str(p)[:200]}, line {number})", "the line")
            for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1)
            if line.strip()
        ]
    else:
        data = load_yaml(raw, "validation.suite_file", str(p)[:200])
    if isinstance(data, dict) and set(data) == {"probes"}:
        data = data["probes"]
    if not isinstance(data, list) or not data:
        raise SpecError("validation.suite_file", f"{p} holds no list of probes", "write a list of {prompt, exact}")
    return [parse_probe(item, f"{p.name}[{i}]", str(p)) for i, item in enumerate(data)]


def evaluate(probe: Probe, text: str, finish_reason: str | None) -> list[str]:
    """Checks a completion against a probe's expectations.

    Args:
        probe: The probe.
        text: The completion text.
        finish_reason: The server's finish reason.

    Returns:
        One line per expectation that did not hold (empty when all held).
    """
    failures = []
    if probe.exact is not None and text != probe.exact:
        failures.append(f"exact: expected {probe.exact!r}, got {text!r}")
    for piece in probe.contains:
        if piece not in text:
            failures.append(f"contains: expected {piece!r} in {text!r}")
    if probe.regex is not None and not re.search(probe.regex, text):
        failures.append(f"regex: no match of /{probe.regex}/ in {text!r}")
    if probe.json:
        try:
            json.loads(text.strip())
        except ValueError as err:
            failures.append(f"json: not valid JSON ({err.msg} at char {err.pos}): {text!r}")
    if probe.finish_reason and finish_reason not in probe.finish_reason:
        failures.append(f"finish_reason: expected one of {probe.finish_reason}, got {finish_reason!r}")
    if probe.non_empty and not text.strip():
        failures.append(f"non_empty: got {text!r}")
    return failures


# Requests ---------------------------------------------------------------------------------------


async def _complete(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    prompt: str,
    max_tokens: int,
    *,
    chat: bool = False,
    ignore_eos: bool = False,
    extra: dict[str, Any] | None = None,
    retries: int = 2,
) -> dict[str, Any]:
    """One greedy non-streamed completion; transient errors are retried ``retries`` times."""
    api: Api = "chat" if chat else "completions"
    body = build_payload(api, endpoint.model, prompt, max_tokens, stream=False, ignore_eos=ignore_eos, extra=extra)
    path = "/v1/chat/completions" if chat else "/v1/completions"
    for attempt in range(retries + 1):
        try:
            return await post_json(client, endpoint, path, body)
        except TransientError:
            if attempt == retries:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _choice_text(resp: dict[str, Any], chat: bool) -> tuple[str, str | None]:
    try:
        choice = resp["choices"][0]
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        return text or "", choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise PermanentError(f"the response has no choices[0]: {str(resp)[:200]}") from None


async def run_probe(client: httpx.AsyncClient, endpoint: Endpoint, probe: Probe) -> ProbeResult:
    """Sends one probe (greedy, not streamed) and judges it; request errors become failures."""
    result = ProbeResult(
        probe.name,
        probe.source,
        False,
        prompt=probe.prompt,
        expectations=probe.expectations(),
        must_pass=probe.must_pass,
    )
    try:
        resp = await _complete(client, endpoint, probe.prompt, probe.max_tokens, chat=probe.chat)
        result.text, result.finish_reason = _choice_text(resp, probe.chat)
    except (PermanentError, TransientError) as err:
        result.failures.append(f"request: {err}")
        return result
    result.failures = evaluate(probe, result.text, result.finish_reason)
    result.passed = not result.failures
    return result


async def run_suite(client: httpx.AsyncClient, endpoint: Endpoint, probes: Sequence[Probe]) -> list[ProbeResult]:
    """Runs probes one after the other (greedy output does not depend on batching, but keep it simple)."""
    return [await run_probe(client, endpoint, probe) for probe in probes]


async def run_smoke(
    client: httpx.AsyncClient, endpoint: Endpoint, *, chat: bool = False, max_tokens: int = 8
) -> list[ProbeResult]:
    """The built-in smoke suite (see the module doc); holds for any healthy model.

    Args:
        client: The pooled client.
        endpoint: The endpoint.
        chat: Also check one chat completion (when the load uses the chat endpoint).
        max_tokens: Tokens per smoke completion.

    Returns:
        One result per smoke check.
    """
    results: list[ProbeResult] = []

    def add(name: str, prompt: str, failures: list[str], text: str = "", reason: str | None = None, exp: str = ""):
        results.append(
            ProbeResult(
                name, "smoke", not failures, failures, prompt, text, reason, [exp] if exp else [], must_pass=True
            )
        )

    for i, prompt in enumerate(SMOKE_PROMPTS):
        name = f"smoke: full-length completion #{i + 1}"
        exp = f"{max_tokens} tokens with ignore_eos, finish_reason length, non-empty text"
        try:
            resp = await _complete(client, endpoint, prompt, max_tokens, ignore_eos=True)
            text, reason = _choice_text(resp, False)
        except (PermanentError, TransientError) as err:
            add(name, prompt, [f"request: {err}"], exp=exp)
            continue
        failures = []
        if not text.strip():
            failures.append(f"non_empty: empty completion {text!r}")
        if reason != "length":
            failures.append(f"finish_reason: {reason!r}, expected 'length' (ignore_eos)")
        used = (resp.get("usage") or {}).get("completion_tokens")
        if used is not None and used != max_tokens:
            failures.append(f"usage: completion_tokens {used}, expected {max_tokens}")
        add(name, prompt, failures, text, reason, exp)

    prompt = SMOKE_PROMPTS[0]
    exp = "the same prompt twice gives the same greedy text"
    try:
        texts = [_choice_text(await _complete(client, endpoint, prompt, 16), False)[0] for _ in range(2)]
        failures = [] if texts[0] == texts[1] else [f"determinism: first {texts[0]!r}, then {texts[1]!r}"]
        add("smoke: greedy determinism", prompt, failures, texts[1], exp=exp)
    except (PermanentError, TransientError) as err:
        add("smoke: greedy determinism", prompt, [f"request: {err}"], exp=exp)
        texts = [""]

    exp = "the streamed text equals the non-streamed text"
    async with asyncio.timeout(120):
        rec = await stream_request(
            client,
            endpoint,
            "completions",
            build_payload("completions", endpoint.model, prompt, 16, ignore_eos=False),
            collect_text=True,
        )
    if not rec.success:
        add("smoke: stream agrees with non-stream", prompt, [f"stream: {rec.error}"], exp=exp)
    else:
        failures = (
            [] if rec.generated_text == texts[0] else [f"stream: streamed {rec.generated_text!r}, not {texts[0]!r}"]
        )
        add("smoke: stream agrees with non-stream", prompt, failures, rec.generated_text, rec.finish_reason, exp)

    if chat:
        exp = "a chat completion with non-empty content"
        try:
            text, reason = _choice_text(await _complete(client, endpoint, prompt, max_tokens, chat=True), True)
            add(
                "smoke: chat completion",
                prompt,
                [] if text.strip() else [f"non_empty: empty content {text!r}"],
                text,
                reason,
                exp,
            )
        except (PermanentError, TransientError) as err:
            add("smoke: chat completion", prompt, [f"request: {err}"], exp=exp)
    return results


# Baseline agreement -----------------------------------------------------------------------------


@dataclass
class Agreement:
    """Greedy token agreement between the new revision and the baseline.

    Attributes:
        agreement: Token-weighted agreement, 0-1 (None when nothing could be compared).
        prompts: Per prompt: ``agreement``, ``first_divergence`` (token index, None if none),
            ``new_tokens`` and ``baseline_tokens`` counts, ``error``.
        method: How it was measured.
    """

    agreement: float | None
    prompts: list[dict[str, Any]] = field(default_factory=list)
    method: str = "greedy /v1/completions with logprobs=1; positionwise comparison of logprobs.tokens"


def compare_tokens(new: Sequence[str], base: Sequence[str]) -> tuple[int, int, int | None]:
    """Positionwise comparison of two greedy token sequences.

    Returns:
        ``(agreeing positions, compared positions = the longer length, first divergence or None)``.
    """
    total = max(len(new), len(base))
    same = sum(1 for a, b in zip(new, base, strict=False) if a == b)
    first = next((i for i, (a, b) in enumerate(zip(new, base, strict=False)) if a != b), None)
    if first is None and len(new) != len(base):
        first = min(len(new), len(base))
    return same, total, first


async def _tokens(client: httpx.AsyncClient, endpoint: Endpoint, prompt: str, max_tokens: int) -> list[str]:
    resp = await _complete(client, endpoint, prompt, max_tokens, extra={"logprobs": 1})
    try:
        tokens = resp["choices"][0]["logprobs"]["tokens"]
    except (KeyError, IndexError, TypeError):
        raise PermanentError(f"{endpoint.base_url} returned no logprobs.tokens (logprobs unsupported?)") from None
    return [str(t) for t in tokens]


async def token_agreement(
    new_client: httpx.AsyncClient,
    new: Endpoint,
    base_client: httpx.AsyncClient,
    base: Endpoint,
    prompts: Sequence[str],
    *,
    max_tokens: int = 32,
) -> Agreement:
    """Greedy token agreement over ``prompts`` (see the module doc for the definition).

    Args:
        new_client: Client of the new revision.
        new: The new revision.
        base_client: Client of the baseline.
        base: The baseline.
        prompts: Prompts to compare on.
        max_tokens: Tokens generated per prompt.

    Returns:
        The agreement and per-prompt details (request errors recorded per prompt).
    """
    same_total = 0
    positions_total = 0
    rows = []
    for i, prompt in enumerate(prompts):
        try:
            a, b = await asyncio.gather(
                _tokens(new_client, new, prompt, max_tokens), _tokens(base_client, base, prompt, max_tokens)
            )
        except (PermanentError, TransientError) as err:
            rows.append({"prompt_index": i, "agreement": None, "error": str(err)})
            continue
        same, total, first = compare_tokens(a, b)
        same_total += same
        positions_total += total
        rows.append(
            {
                "prompt_index": i,
                "agreement": same / total if total else 1.0,
                "first_divergence": first,
                "new_tokens": len(a),
                "baseline_tokens": len(b),
                "error": "",
            }
        )
    value = same_total / positions_total if positions_total else None
    return Agreement(value, rows)
