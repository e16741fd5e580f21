"""Does the candidate model the reference texts as well? Likelihood, no hand-written answers.

The gate's quality question (``validation.quality``, :class:`~llm_rollout.spec.QualitySpec`):

* **Scoring.** Each reference text is sent once to each side as the prompt of a
  ``/v1/completions`` request with ``echo: true``, ``logprobs: 0`` and ``max_tokens: 1`` - one
  prefill, no generation worth the name. vLLM 0.32 answers with the prompt's own log-probabilities:
  ``vllm/entrypoints/openai/completion/serving.py``, ``OpenAIServingCompletion.
  request_output_to_completion_response``, with ``echo`` prepends the prompt's token ids and
  ``prompt_logprobs`` to the output's, and ``_create_completion_logprobs`` lists them as
  ``logprobs.tokens`` / ``token_logprobs`` (the first position has no logprob: nothing precedes
  it); ``CompletionRequest.to_sampling_params`` turns ``echo`` with ``logprobs`` into
  ``prompt_logprobs``. The first ``usage.prompt_tokens`` entries are the prompt's. A text's cost
  is ``-sum(log2 p)`` over its scored tokens, in **bits per byte** of its UTF-8 text (so models
  with different tokenizers compare fairly); when the first position is a text token rather than
  a BOS, it has no logprob and its bytes are left out of the denominator too.
* **Against the stable revision** (when one serves): the per-text differences candidate - stable
  are judged with :func:`~llm_rollout.validation.stats.paired_non_inferiority` on the difference
  scale - the sign-test interval of the median difference against ``margin`` bits per byte, at
  looks on a doubling schedule from ``min_texts`` to ``max_texts`` with the error spread over
  the looks, the same sequential rule the speed comparison uses. Texts are taken in a seeded
  shuffled order, so every look is a sample of the whole set.
* **The floor** (always, and alone on a first rollout): the candidate's bits per byte over the
  texts must be below uniform guessing over its own vocabulary, ``log2(vocabulary)`` bits per
  scored token in the same bytes. A scrambled model is worse than guessing; a byte-unigram floor
  would not do (letter frequencies are beaten even by guessing). The vocabulary size is
  ``quality.vocab_size`` when given, else asked of the server: vLLM 0.32 refuses a ``logit_bias``
  entry for a token id outside the model's vocabulary (``vllm/sampling_params.py``
  ``SamplingParams._validate_logit_bias`` against ``model_config.get_vocab_size()``, run by
  ``SamplingParams.verify`` from ``vllm/v1/engine/input_processor.py``) with HTTP 400 (a
  ``VLLMValidationError``: ``vllm/entrypoints/serve/exception_handling/error_response.py``), so the
  largest accepted id is found by a doubling then bisecting search on the status code alone
  (about two dozen one-token requests; the tiny model's 640 takes 11).

What it catches: damaged weights (scrambled, broken quantization), a wrong tokenizer, a model
served with the wrong files - anything that makes the model's own domain less likely. What it
cannot: helpfulness, instruction following, a chat template (plain texts are scored without
one), facts outside the texts. A team's scored suite (:mod:`llm_rollout.validation.probes`)
judges answers.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llm_rollout.errors import PermanentError, SpecError, TransientError
from llm_rollout.spec import LoadSpec, QualitySpec
from llm_rollout.validation.answers import Decision
from llm_rollout.validation.client import Endpoint, post_json
from llm_rollout.validation.stats import SAID, Comparison, look_schedule, paired_non_inferiority, per_look_confidence

LogFn = Callable[[str], None]

FIELD = "validation.quality.texts"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_TEXTS = DATA_DIR / "reference-texts.jsonl"
"""The shipped sample: short general-English passages, for models that speak English broadly."""
MAX_FILE_BYTES = 16 * 1024 * 1024
"""Bytes a reference-text file may hold (the texts are kept in memory)."""
MAX_TEXTS_READ = 100_000
"""Lines of a reference-text file read at most."""
SHUFFLE_SEED = 26
"""Seed of the order texts are scored in (the same on every run and both sides)."""
SCORE_CONCURRENCY = 4
"""Texts scored at once per side."""
MAX_VOCAB_PROBE = 1 << 27
"""Largest vocabulary the search considers (134M ids; real models have up to ~260k)."""
LN2 = math.log(2.0)


# Reference texts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceTexts:
    """The texts the question scores, in scoring order.

    Attributes:
        source: Where they came from (``validation.quality.texts (<path>)``, ``workload prompts
            (<path>)``, ``shipped sample (<path>)``).
        texts: The texts, shuffled with a fixed seed.
        note: Why the source was chosen, when it is not the team's own file.
    """

    source: str
    texts: tuple[str, ...]
    note: str = ""


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word boundary (whole when it fits)."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = head.rfind(" ")
    return head[:space] if space > limit // 2 else head


def read_texts_file(path: str | Path, field_name: str = FIELD) -> list[str]:
    """Reads a JSONL reference-text file: one ``{"text": "..."}`` per line (blank lines skipped).

    Args:
        path: The file.
        field_name: The spec field named in errors.

    Returns:
        The texts in file order.

    Raises:
        SpecError: Unreadable, too big, not UTF-8, a line that is not ``{"text": <non-empty string>}``.
    """
    file = Path(path).expanduser()
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise SpecError(field_name, f"{file} is not a regular file", "point it at a JSONL file")
    except OSError as err:
        raise SpecError(field_name, f"cannot read {file}: {err.strerror}", "check the path") from None
    if size > MAX_FILE_BYTES:
        raise SpecError(field_name, f"{file} is {size} bytes, more than {MAX_FILE_BYTES}", "keep a few hundred texts")
    texts: list[str] = []
    try:
        with file.open(encoding="utf-8", errors="strict") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if len(texts) >= MAX_TEXTS_READ:
                    break
                try:
                    item = json.loads(line)
                except ValueError as err:
                    raise SpecError(
                        f"{field_name} ({file}, line {number})", f"not JSON: {err}", 'write {"text": "..."}'
                    ) from None
                text = item.get("text") if isinstance(item, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise SpecError(
                        f"{field_name} ({file}, line {number})",
                        'has no non-empty string "text"',
                        'write {"text": "..."}',
                    )
                texts.append(text)
    except UnicodeDecodeError:
        raise SpecError(field_name, f"{file} is not UTF-8 text", "save it as UTF-8 JSONL") from None
    return texts


def _workload_texts(load: LoadSpec) -> tuple[list[str], str] | None:
    """The prompts of a custom workload file (a conversation's contents joined), with the path."""
    w = load.workload
    if w is None or w.dataset != "custom" or not w.path:
        return None
    from llm_rollout.validation.workload import load_file

    workload = load_file(w.path, time_scale=w.time_scale)
    texts = []
    for r in workload.requests:
        if r.prompt is not None:
            texts.append(r.prompt)
        elif r.messages:
            texts.append("\n".join(content for _, content in r.messages))
    return [t for t in dict.fromkeys(texts) if t.strip()], w.path


def reference_texts(spec: QualitySpec, load: LoadSpec) -> ReferenceTexts:
    """The texts to score: ``spec.texts``, else the workload file's prompts, else the shipped sample.

    Workload prompts are used when there are at least ``min_texts`` distinct ones; else the
    shipped sample is (and ``note`` says why). The texts are cut to ``max_text_chars`` and shuffled
    with a fixed seed.

    Raises:
        SpecError: ``spec.texts`` cannot be read or holds fewer than ``min_texts`` texts.
    """
    note = ""
    if spec.texts:
        texts = read_texts_file(spec.texts)
        if len(texts) < spec.min_texts:
            raise SpecError(
                FIELD,
                f"{spec.texts} holds {len(texts)} texts, fewer than min_texts {spec.min_texts}",
                "add texts from the model's domain (a few dozen decide quickly) or lower validation.quality.min_texts",
            )
        source = f"{FIELD} ({spec.texts})"
    else:
        found = _workload_texts(load)
        if found and len(found[0]) >= spec.min_texts:
            texts, source = found[0], f"workload prompts ({found[1]})"
        else:
            if found:
                note = f"the workload file has {len(found[0])} distinct prompts, fewer than min_texts {spec.min_texts}"
            texts, source = (
                read_texts_file(SAMPLE_TEXTS, "validation.quality (shipped sample)"),
                f"shipped sample ({SAMPLE_TEXTS.name})",
            )
    cut = [_cut(t, spec.max_text_chars) for t in texts]
    random.Random(SHUFFLE_SEED).shuffle(cut)
    return ReferenceTexts(source, tuple(cut), note)


# Scoring ----------------------------------------------------------------------------------------


@dataclass
class TextScore:
    """One text scored on one side.

    Attributes:
        bytes: UTF-8 bytes the scored tokens cover.
        tokens: Tokens scored (prompt positions with a logprob).
        bits: ``-sum(log2 p)`` over them.
        error: Why it could not be scored (empty when it was).
    """

    bytes: int = 0
    tokens: int = 0
    bits: float = 0.0
    error: str = ""

    @property
    def bpb(self) -> float | None:
        """Bits per byte, None when not scored."""
        return self.bits / self.bytes if self.bytes and not self.error else None


def parse_echo(text: str, resp: dict[str, Any]) -> TextScore:
    """The prompt's cost from an ``echo`` + ``logprobs`` completion response (see the module doc)."""
    try:
        choice = resp["choices"][0]
        logprobs = choice["logprobs"]
        tokens = list(logprobs["tokens"])
        values = list(logprobs["token_logprobs"])
        prompt_tokens = int(resp["usage"]["prompt_tokens"])
    except (KeyError, IndexError, TypeError, ValueError):
        return TextScore(error="the response has no echoed prompt logprobs (echo with logprobs unsupported?)")
    if prompt_tokens < 2 or len(values) < prompt_tokens:
        return TextScore(error=f"{prompt_tokens} prompt tokens with {len(values)} logprobs: nothing to score")
    nats = 0.0
    scored = 0
    for value in values[1:prompt_tokens]:
        if value is None or not isinstance(value, int | float) or math.isnan(value):
            return TextScore(error="a prompt token without a logprob")
        nats -= max(float(value), -1e4)  # -inf (an impossible token) counted as very unlikely
        scored += 1
    size = len(text.encode("utf-8"))
    first = str(tokens[0]) if tokens else ""
    if first and text.startswith(first):
        # No BOS: the first text token has no logprob; its bytes are not scored either.
        size -= len(first.encode("utf-8"))
    if size <= 0:
        return TextScore(error="the scored tokens cover no bytes")
    return TextScore(bytes=size, tokens=scored, bits=nats / LN2)


async def score_text(client: httpx.AsyncClient, endpoint: Endpoint, text: str, retries: int = 2) -> TextScore:
    """One text's cost on one endpoint (one prefill); request errors become the score's ``error``."""
    body = {
        "model": endpoint.model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 0,
    }  # fmt: skip
    for attempt in range(retries + 1):
        try:
            return parse_echo(text, await post_json(client, endpoint, "/v1/completions", body))
        except TransientError as err:
            if attempt == retries:
                return TextScore(error=str(err))
            await asyncio.sleep(0.5 * (attempt + 1))
        except PermanentError as err:
            return TextScore(error=str(err))
    raise AssertionError("unreachable")


async def score_texts(
    client: httpx.AsyncClient, endpoint: Endpoint, texts: Sequence[str], concurrency: int = SCORE_CONCURRENCY
) -> list[TextScore]:
    """Scores ``texts`` in order, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> TextScore:
        async with gate:
            return await score_text(client, endpoint, text)

    return list(await asyncio.gather(*(one(t) for t in texts)))


async def _accepts_token_id(client: httpx.AsyncClient, endpoint: Endpoint, token_id: int) -> bool | None:
    """Whether the server takes ``token_id`` in ``logit_bias`` (True 2xx, False 400, None anything else)."""
    body = {
        "model": endpoint.model, "prompt": "a", "max_tokens": 1, "temperature": 0.0,
        "logit_bias": {str(token_id): 0.0},
    }  # fmt: skip
    try:
        # Only the status matters: the body is never read.
        async with client.stream("POST", endpoint.url("/v1/completions"), json=body) as resp:
            status = resp.status_code
    except (httpx.HTTPError, OSError):
        return None
    return True if 200 <= status < 300 else False if status == 400 else None


async def vocab_size(client: httpx.AsyncClient, endpoint: Endpoint) -> int | None:
    """The served model's vocabulary size from its ``logit_bias`` check (see the module doc), None if unknown."""
    if await _accepts_token_id(client, endpoint, 0) is not True:
        return None
    low, high = 0, 1024  # low accepted; find a refused high
    while True:
        ok = await _accepts_token_id(client, endpoint, high)
        if ok is None:
            return None
        if not ok:
            break
        low, high = high, high * 2
        if high > MAX_VOCAB_PROBE:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        ok = await _accepts_token_id(client, endpoint, mid)
        if ok is None:
            return None
        low, high = (mid, high) if ok else (low, mid)
    return low + 1


# The question -----------------------------------------------------------------------------------


@dataclass
class QualityResult:
    """What the quality question found.

    Attributes:
        source: Where the texts came from.
        note: Why that source (when it is not the team's own file).
        texts_available: Texts there were.
        stable_url: The stable revision compared with (None on a first rollout).
        rows: Per text scored: ``index``, ``bytes``, ``candidate_bpb``, ``stable_bpb``,
            ``difference``, ``error``.
        candidate_bpb: The candidate's bits per byte over every text it scored (bytes-weighted).
        stable_bpb: The stable's, over the same texts.
        uniform_bpb: Uniform guessing over the candidate's vocabulary, in the same bytes.
        vocab_size: The candidate's vocabulary size (None when unknown).
        vocab_source: ``validation.quality.vocab_size`` or ``the server's logit_bias check``.
        floor_ok: The candidate beats guessing (None when not asked or unknown).
        comparison: The paired per-text comparison with the stable (difference scale).
        looks: Looks taken.
        confidence: The per-look confidence.
        margin: ``validation.quality.margin`` (bits per byte).
        failures: Reasons the candidate fails the question.
        inconclusive: Reasons it could not be decided.
        seconds: Time the question took.
    """

    source: str
    note: str = ""
    texts_available: int = 0
    stable_url: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    candidate_bpb: float | None = None
    stable_bpb: float | None = None
    uniform_bpb: float | None = None
    vocab_size: int | None = None
    vocab_source: str = ""
    floor_ok: bool | None = None
    comparison: Comparison | None = None
    looks: int = 0
    confidence: float = 0.0
    margin: float = 0.0
    failures: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def texts_scored(self) -> int:
        """Texts scored on the candidate (and the stable, when compared)."""
        return sum(1 for r in self.rows if not r.get("error"))

    @property
    def decision(self) -> Decision:
        """``fail``, ``inconclusive`` or ``pass``: the gate's one vocabulary."""
        return "fail" if self.failures else "inconclusive" if self.inconclusive else "pass"

    @property
    def said(self) -> str:
        """The decision as the quality lines say it (``not worse``, ``worse``, ``undecided``)."""
        return SAID[self.decision]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "source": self.source, "note": self.note, "texts_available": self.texts_available,
            "texts_scored": self.texts_scored, "stable_url": self.stable_url, "decision": self.decision,
            "said": self.said,
            "candidate_bpb": self.candidate_bpb, "stable_bpb": self.stable_bpb, "uniform_bpb": self.uniform_bpb,
            "vocab_size": self.vocab_size, "vocab_source": self.vocab_source, "floor_ok": self.floor_ok,
            "comparison": self.comparison.to_dict() if self.comparison else None, "looks": self.looks,
            "confidence": self.confidence, "margin": self.margin, "failures": self.failures,
            "inconclusive": self.inconclusive, "seconds": self.seconds, "rows": self.rows,
        }  # fmt: skip


def _weighted_bpb(scores: Sequence[TextScore]) -> float | None:
    ok = [s for s in scores if not s.error]
    total = sum(s.bytes for s in ok)
    return sum(s.bits for s in ok) / total if total else None


async def ask_quality(
    spec: QualitySpec,
    texts: ReferenceTexts,
    *,
    candidate: tuple[httpx.AsyncClient, Endpoint],
    stable: tuple[httpx.AsyncClient, Endpoint] | None,
    log: LogFn,
) -> QualityResult:
    """Asks the quality question (see the module doc).

    Args:
        spec: ``validation.quality``.
        texts: The reference texts (:func:`reference_texts`).
        candidate: The candidate's client and endpoint.
        stable: The stable revision's, when one serves (None: the floor only).
        log: Progress lines.

    Returns:
        The result; its ``failures`` and ``inconclusive`` join the verdict's reasons.
    """
    started = time.monotonic()
    (c_client, c_ep) = candidate
    out = QualityResult(source=texts.source, note=texts.note, texts_available=len(texts.texts), margin=spec.margin)
    out.stable_url = stable[1].base_url if stable else None
    if stable and stable[1].base_url == c_ep.base_url:
        # One server scored as both sides is "not worse" than itself whatever it serves (as in the
        # speed comparison: compare.compare_with_stable refuses the same case).
        out.inconclusive.append(
            f"quality: the candidate and the stable revision are both reached at {c_ep.base_url}, so the texts "
            "would be scored on one server twice. Fix: give each its own address (LLM_ROLLOUT_ADDRESS_MAP), or "
            "set validation.quality.enabled: false"
        )
        return out
    n_max = min(spec.max_texts, len(texts.texts))
    schedule = look_schedule(min(spec.min_texts, n_max), n_max) if stable else [n_max]
    out.confidence = per_look_confidence(spec.confidence, len(schedule))
    cand: list[TextScore] = []
    stab: list[TextScore] = []
    for n in schedule:
        batch = list(texts.texts[len(cand) : n])
        if stable:
            c_new, s_new = await asyncio.gather(
                score_texts(c_client, c_ep, batch), score_texts(stable[0], stable[1], batch)
            )
            stab += s_new
        else:
            c_new = await score_texts(c_client, c_ep, batch)
        cand += c_new
        if not stable:
            break
        out.looks += 1
        out.comparison = paired_non_inferiority(
            [c.bpb for c in cand], [s.bpb for s in stab], metric="bits_per_byte", better="lower",
            margin=spec.margin, confidence=out.confidence, min_pairs=min(spec.min_texts, n_max), unit="texts",
            scale="difference",
        )  # fmt: skip
        comp = out.comparison
        median = "-" if comp.ratio is None else f"{comp.ratio:+.4f}"
        interval = "" if comp.low is None else f" [{comp.low:+.4f}, {comp.high:+.4f}]"
        decided = comp.word
        log(
            f"validate: quality: look {out.looks} after {n} texts: candidate - stable bits per byte "
            f"{median}{interval}: {decided}"
        )
        if comp.decision != "inconclusive":
            break
    for i, c in enumerate(cand):
        row: dict[str, Any] = {"index": i, "bytes": c.bytes, "candidate_bpb": c.bpb, "error": c.error}
        if stable:
            s = stab[i]
            row["stable_bpb"] = s.bpb
            row["difference"] = c.bpb - s.bpb if c.bpb is not None and s.bpb is not None else None
            row["error"] = c.error or (f"stable: {s.error}" if s.error else "")
        out.rows.append(row)
    both = [(c, stab[i] if stable else None) for i, c in enumerate(cand)]
    paired = [(c, s) for c, s in both if not c.error and (s is None or not s.error)]
    out.candidate_bpb = _weighted_bpb([c for c, _ in paired])
    if stable:
        out.stable_bpb = _weighted_bpb([s for _, s in paired if s is not None])
    errors = [r["error"] for r in out.rows if r.get("error")]
    if errors and not paired:
        out.inconclusive.append(
            f"quality: no reference text could be scored ({len(errors)} errors, e.g. {errors[0][:200]})"
        )

    # The floor: beat uniform guessing over the candidate's own vocabulary.
    if spec.floor and paired:
        if spec.vocab_size:
            out.vocab_size, out.vocab_source = spec.vocab_size, "validation.quality.vocab_size"
        else:
            out.vocab_size, out.vocab_source = await vocab_size(c_client, c_ep), "the server's logit_bias check"
        scored = [c for c, _ in paired]
        size = sum(c.bytes for c in scored)
        if out.vocab_size is None:
            out.inconclusive.append(
                "quality: the candidate's vocabulary size is unknown (the server did not answer the logit_bias "
                "check), so the floor of uniform guessing cannot be drawn. Fix: set validation.quality.vocab_size"
            )
        elif size:
            out.uniform_bpb = sum(c.tokens for c in scored) * math.log2(out.vocab_size) / size
            out.floor_ok = out.candidate_bpb is not None and out.candidate_bpb < out.uniform_bpb
            if not out.floor_ok:
                out.failures.append(
                    f"quality: the candidate predicts the reference texts worse than uniform guessing: "
                    f"{out.candidate_bpb:.3f} bits per byte, guessing over its {out.vocab_size} tokens "
                    f"{out.uniform_bpb:.3f} ({len(scored)} texts from {texts.source})"
                )
    comp = out.comparison
    if stable and comp is not None:
        if comp.decision == "fail":
            out.failures.append(f"quality: {comp.describe()} from {texts.source}; margin validation.quality.margin")
        elif comp.decision == "inconclusive" and not out.failures:
            out.inconclusive.append(f"quality: {comp.describe()} after {out.looks} looks (max_texts {spec.max_texts})")
    out.seconds = round(time.monotonic() - started, 3)
    return out
