"""What the load phase sends: the team's own traffic from a JSONL file, or a shape from ``vllm bench serve``.

``validation.load.workload`` (:class:`~llm_rollout.spec.LoadWorkloadSpec`) picks one of three
datasets; the names and their meaning follow vLLM 0.32's benchmark datasets
(``vllm/benchmarks/datasets/datasets.py``), so a team that sized a service with ``vllm bench
serve`` recognises them:

* ``custom`` (``CustomDataset``, ``--dataset-name custom --dataset-path``): a JSONL file, one
  request per line: ``prompt`` (a string) *or* ``messages`` (a chat conversation, a list of
  ``{"role", "content"}``), ``max_tokens`` (vLLM's custom dataset calls it ``output_tokens``; both
  are accepted) and an optional ``timestamp``: the arrival time in seconds from the start (the
  label vLLM's ``TimedTrace`` reads by default, ``--timed-trace-label-timestamp``), scaled by
  ``time_scale`` (``--timed-trace-sec-multiplier``). With timestamps on every line the file is
  replayed open loop at those times; without any, it feeds the closed-loop concurrency levels.
* ``random`` (``RandomDataset``, ``--random-input-len``, ``--random-output-len``,
  ``--random-range-ratio``, ``--random-prefix-len``): input and output lengths drawn uniformly from
  ``[floor(len * (1 - range_ratio)), ceil(len * (1 + range_ratio))]`` (output at least 1), as
  ``vllm/benchmarks/datasets/utils.py`` ``get_sampling_params`` draws them, behind one fixed prefix
  of ``prefix_len``.
* ``prefix_repetition`` (``PrefixRepetitionRandomDataset``, ``--prefix-repetition-*``):
  ``num_prefixes`` shared prefixes of ``prefix_len``, each followed by ``num_requests //
  num_prefixes`` distinct suffixes of ``suffix_len`` (a RAG service: the same retrieved documents,
  different questions); fewer requests than prefixes is refused, as upstream refuses it.

One difference from vLLM, stated: the validator has no tokenizer, so generated lengths are counted
in *words* of common English (most tokenizers make one token of each); output lengths are exact
(``max_tokens`` with ``ignore_eos``). The server's usage chunk reports the real token counts, and the
report shows them.

A file is read once, before the first request, and refused with a
:class:`~llm_rollout.errors.SpecError` that names the field, the line and the fix. Files are
capped at :data:`MAX_REQUESTS` lines and :data:`MAX_FILE_BYTES`. The shipped sample
(``sample:support-rag``, :data:`SAMPLES`) is a few dozen made-up support and RAG requests.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_rollout.bounded import read_regular_file
from llm_rollout.errors import SpecError
from llm_rollout.spec import LoadSpec, LoadWorkloadSpec
from llm_rollout.validation.client import Api, build_payload
from llm_rollout.validation.load import _WORDS, make_prompts

MAX_REQUESTS = 100_000
"""Lines a workload file may hold."""
MAX_FILE_BYTES = 64 * 1024 * 1024
"""Bytes a workload file may hold (the validator keeps every request in memory)."""
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLES: dict[str, Path] = {"support-rag": DATA_DIR / "support-rag.jsonl"}
"""Workload files shipped with the library, used as ``path: sample:<name>``."""
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
FIELD = "validation.load.workload"


@dataclass(frozen=True)
class WorkloadRequest:
    """One request of a workload.

    Attributes:
        max_tokens: Output tokens asked for.
        prompt: The prompt text (sent to ``load.endpoint``; as one user message on ``chat``).
        messages: A chat conversation (always sent to ``/v1/chat/completions``).
        timestamp: Arrival time in seconds from the start (already scaled), None when not timed.
    """

    max_tokens: int
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    timestamp: float | None = None

    def api(self, default: Api) -> Api:
        """The API this request goes to: chat for a conversation, else ``default``."""
        return "chat" if self.messages is not None else default

    def payload(self, default: Api, model: str, *, ignore_eos: bool = True) -> dict[str, Any]:
        """The streamed request body (see :func:`~llm_rollout.validation.client.build_payload`)."""
        if self.messages is None:
            return build_payload(default, model, self.prompt or "", self.max_tokens, ignore_eos=ignore_eos)
        body = build_payload("chat", model, "", self.max_tokens, ignore_eos=ignore_eos)
        body["messages"] = [{"role": role, "content": content} for role, content in self.messages]
        return body


@dataclass(frozen=True)
class Workload:
    """The requests of one workload and what they are.

    Attributes:
        name: ``generated`` (today's prompts), ``random``, ``prefix_repetition`` or ``custom``.
        source: Where it came from (a file path, or the shape's parameters).
        requests: The requests, in send order (by timestamp when timed).
    """

    name: str
    source: str
    requests: tuple[WorkloadRequest, ...]

    @property
    def timed(self) -> bool:
        """Every request has an arrival time: replay it open loop."""
        return bool(self.requests) and all(r.timestamp is not None for r in self.requests)

    @property
    def span_s(self) -> float:
        """Seconds from the first arrival to the last (0 when not timed)."""
        if not self.timed:
            return 0.0
        stamps = [r.timestamp or 0.0 for r in self.requests]
        return max(stamps) - min(stamps)

    @property
    def trace_rate(self) -> float | None:
        """The recorded mean request rate (requests/s), None when not timed or all at once."""
        if not self.timed or len(self.requests) < 2 or self.span_s <= 0:
            return None
        return (len(self.requests) - 1) / self.span_s

    def arrivals(self, rate: float | None = None) -> list[float]:
        """Arrival offsets (s from the start), the recorded ones or rescaled to a mean ``rate``.

        Args:
            rate: Target mean rate in requests/s (None: as recorded).

        Returns:
            One offset per request, the first at 0.
        """
        if not self.timed:
            raise ValueError("the workload has no arrival times")
        first = min(r.timestamp or 0.0 for r in self.requests)
        scale = 1.0
        recorded = self.trace_rate
        if rate is not None and recorded:
            scale = recorded / rate
        return [((r.timestamp or 0.0) - first) * scale for r in self.requests]

    def describe(self) -> str:
        """One line for logs and the report."""
        text = f"{self.name} ({self.source}): {len(self.requests)} requests"
        if self.timed:
            rate = self.trace_rate
            text += f" over {self.span_s:.1f} s" + (f" ({rate:.2f} req/s as recorded)" if rate else "")
        return text


def _where(path: str | Path, line: int) -> str:
    return f"{FIELD}.path ({path}, line {line})"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_line(text: str, line: int, path: str | Path, time_scale: float = 1.0) -> WorkloadRequest:
    """One JSONL line as a request.

    Args:
        text: The line.
        line: Its 1-based number (for the message).
        path: The file (for the message).
        time_scale: Multiplier from the file's timestamps to seconds.

    Returns:
        The request.

    Raises:
        SpecError: What is wrong with the line, naming the key and the fix.
    """
    where = _where(path, line)
    try:
        item = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(
            where, f"is not JSON ({err.msg} at column {err.colno})", "write one JSON object per line"
        ) from None
    except RecursionError:
        raise SpecError(where, "is nested too deeply", "write one flat JSON object per line") from None
    if not isinstance(item, dict):
        raise SpecError(where, f"holds a {type(item).__name__}, not an object", "write one JSON object per line")
    known = {"prompt", "messages", "max_tokens", "output_tokens", "timestamp"}
    unknown = sorted(set(item) - known)
    if unknown:
        raise SpecError(
            f"{where}: {unknown[0]}",
            "is not a workload field",
            "use prompt or messages, max_tokens (or output_tokens) and optionally timestamp",
        )
    has_prompt, has_messages = "prompt" in item, "messages" in item
    if has_prompt == has_messages:
        raise SpecError(
            where,
            "has both prompt and messages" if has_prompt else "has neither prompt nor messages",
            "give each line exactly one of prompt (a string) or messages (a list of {role, content})",
        )
    prompt = messages = None
    if has_prompt:
        prompt = item["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise SpecError(f"{where}: prompt", "is not a non-empty string", "write the prompt text as a JSON string")
    else:
        raw = item["messages"]
        if not isinstance(raw, list) or not raw:
            raise SpecError(
                f"{where}: messages", "is not a non-empty list", 'write [{"role": "user", "content": "..."}]'
            )
        msgs = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
                raise SpecError(
                    f"{where}: messages[{i}]",
                    f"is not a message ({json.dumps(m)[:80]})",
                    f"write {{'role': one of {sorted(ROLES)}, 'content': a string}}",
                )
            msgs.append((str(m["role"]), str(m["content"])))
        messages = tuple(msgs)
    if "max_tokens" in item and "output_tokens" in item:
        raise SpecError(where, "has both max_tokens and output_tokens", "keep max_tokens")
    key = "max_tokens" if "max_tokens" in item else "output_tokens"
    if key not in item:
        raise SpecError(where, "has no max_tokens", "give each line the output tokens it asks for, e.g. max_tokens: 64")
    if not _positive_int(item[key]):
        raise SpecError(f"{where}: {key}", f"{item[key]!r} is not a whole number >= 1", "write e.g. 64")
    stamp = item.get("timestamp")
    if stamp is not None:
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp) or stamp < 0:
            raise SpecError(
                f"{where}: timestamp",
                f"{stamp!r} is not a number of seconds >= 0",
                "write the arrival time in seconds from the start (scale other units with time_scale)",
            )
        stamp = float(stamp) * time_scale
    return WorkloadRequest(int(item[key]), prompt, messages, stamp)


def resolve_path(path: str) -> Path:
    """A workload path: ``sample:<name>`` for a shipped sample, else a file path."""
    if path.startswith("sample:"):
        name = path.removeprefix("sample:")
        if name not in SAMPLES:
            raise SpecError(f"{FIELD}.path", f"there is no shipped sample {name!r}", f"use one of {sorted(SAMPLES)}")
        return SAMPLES[name]
    return Path(path).expanduser()


def load_file(path: str, *, time_scale: float = 1.0, max_requests: int = MAX_REQUESTS) -> Workload:
    """Reads and checks a JSONL workload file (see the module doc for its format).

    Args:
        path: The file, or ``sample:<name>``.
        time_scale: Multiplier from the file's timestamps to seconds.
        max_requests: Lines allowed.

    Returns:
        The workload, sorted by arrival time when timed.

    Raises:
        SpecError: Unreadable, too big, empty, a bad line, or timestamps on some lines only.
    """
    file = resolve_path(path)
    # A regular file only, its bytes counted while read: a device, FIFO or /proc file reports a
    # size of 0 and never ends (issue 31: /dev/zero).
    data = read_regular_file(file, f"{FIELD}.path", MAX_FILE_BYTES, "workload")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{FIELD}.path", f"{file} is not UTF-8 text", "save it as UTF-8 JSONL") from None
    del data
    requests: list[WorkloadRequest] = []
    for number, text in enumerate(content.splitlines(), 1):
        if not text.strip():
            continue
        if len(requests) >= max_requests:
            raise SpecError(_where(file, number), f"the file has more than {max_requests} requests", "sample fewer")
        requests.append(parse_line(text, number, file, time_scale))
    if not requests:
        raise SpecError(f"{FIELD}.path", f"{file} holds no request", "write one JSON request per line")
    stamped = [r.timestamp is not None for r in requests]
    if any(stamped) and not all(stamped):
        first = stamped.index(not stamped[0]) + 1
        raise SpecError(
            f"{FIELD}.path ({file})",
            f"request {first} {'has' if stamped[first - 1] else 'lacks'} a timestamp, request 1 "
            f"{'has' if stamped[0] else 'lacks'} one",
            "give every line a timestamp (open-loop replay) or none (closed-loop levels)",
        )
    if all(stamped):
        requests.sort(key=lambda r: r.timestamp or 0.0)
    return Workload("custom", str(path), tuple(requests))


def sample_range(rng: random.Random, length: int, ratio: float, *, minimum: int) -> int:
    """One length from ``[floor(length * (1 - ratio)), ceil(length * (1 + ratio))]`` (vLLM's range)."""
    low = max(minimum, math.floor(length * (1 - ratio)))
    high = max(low, math.ceil(length * (1 + ratio)))
    return rng.randint(low, high)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(_WORDS, k=max(0, count)))


def random_workload(
    num_requests: int, *, input_len: int, output_len: int, range_ratio: float = 0.0, prefix_len: int = 0, seed: int = 0
) -> Workload:
    """vLLM's ``random`` dataset in words (``RandomDataset.sample``; lengths as ``get_sampling_params``).

    Each prompt starts with its index, so prompts share nothing but the fixed prefix.
    """
    if not 0 <= range_ratio < 1:
        raise SpecError(f"{FIELD}.range_ratio", f"{range_ratio} is outside [0, 1)", "use e.g. 0.5")
    rng = random.Random(seed)
    prefix = _words(random.Random(seed + 1), prefix_len)
    requests = []
    for i in range(num_requests):
        words = sample_range(rng, input_len, range_ratio, minimum=1)
        out = sample_range(rng, output_len, range_ratio, minimum=1)
        body = f"{i} {_words(rng, words - 1)}".strip()
        requests.append(WorkloadRequest(out, f"{prefix} {body}" if prefix else body))
    source = f"input {input_len} words, output {output_len} tokens, range ratio {range_ratio:g}, prefix {prefix_len}"
    return Workload("random", source, tuple(requests))


def prefix_repetition_workload(
    num_requests: int, *, prefix_len: int, suffix_len: int, num_prefixes: int, output_len: int, seed: int = 0
) -> Workload:
    """vLLM's ``prefix_repetition`` dataset in words (``PrefixRepetitionRandomDataset.sample``).

    Raises:
        SpecError: Fewer requests than prefixes (upstream raises ``ValueError`` for it).
    """
    per_prefix = num_requests // num_prefixes
    if per_prefix == 0:
        raise SpecError(
            f"{FIELD}.num_prefixes",
            f"{num_prefixes} prefixes need at least as many requests, load.num_prompts is {num_requests}",
            "lower num_prefixes or raise validation.load.num_prompts",
        )
    rng = random.Random(seed)
    requests = []
    for p in range(num_prefixes):
        prefix = f"Document {p}: {_words(rng, prefix_len - 2)}".strip()
        for q in range(per_prefix):
            suffix = f"Question {q}: {_words(rng, suffix_len - 2)}".strip()
            requests.append(WorkloadRequest(output_len, f"{prefix}\n{suffix}"))
    source = f"{num_prefixes} prefixes of {prefix_len} words, suffixes of {suffix_len}, output {output_len} tokens"
    return Workload("prefix_repetition", source, tuple(requests))


def generated_workload(load: LoadSpec) -> Workload:
    """Today's generated prompts (``load.input_words``, ``load.shared_prefix_words``)."""
    prompts = make_prompts(max(load.num_prompts, 1), load.input_words)
    if load.shared_prefix_words:
        # One "retrieved context" in front of every question: what prefix-aware routing is for.
        shared = make_prompts(1, load.shared_prefix_words, seed=1)[0].split(" ", 1)[-1]
        prompts = [f"{shared} {p}" for p in prompts]
    source = f"{load.input_words} words" + (
        f", shared prefix {load.shared_prefix_words}" if load.shared_prefix_words else ""
    )
    return Workload("generated", source, tuple(WorkloadRequest(load.output_tokens, p) for p in prompts))


def build_workload(load: LoadSpec) -> Workload:
    """The workload ``load`` describes (a file is read and checked here).

    Raises:
        SpecError: A bad file or shape (naming the field and the fix).
    """
    w: LoadWorkloadSpec | None = load.workload
    if w is None:
        return generated_workload(load)
    if w.dataset == "custom":
        assert w.path is not None  # the spec refuses custom without a path
        return load_file(w.path, time_scale=w.time_scale)
    n = max(load.num_prompts, 1)
    if w.dataset == "random":
        return random_workload(
            n,
            input_len=w.input_len or load.input_words,
            output_len=w.output_len or load.output_tokens,
            range_ratio=w.range_ratio,
            prefix_len=w.prefix_len or 0,
        )
    return prefix_repetition_workload(
        n,
        prefix_len=w.prefix_len if w.prefix_len is not None else load.input_words,
        suffix_len=w.suffix_len or max(1, load.input_words // 4),
        num_prefixes=w.num_prefixes or 10,
        output_len=w.output_len or load.output_tokens,
    )


def prompts_of(workload: Workload) -> Sequence[str]:
    """The plain prompts of a workload (conversations left out), e.g. for the llm-d P/D length check."""
    return [r.prompt for r in workload.requests if r.prompt is not None]
