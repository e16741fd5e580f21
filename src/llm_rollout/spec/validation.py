"""The validation gate's section of the spec: SLO checks, load and workloads, recovery against the
uncompressed original, the comparison with the stable revision.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from llm_rollout.errors import SpecError
from llm_rollout.spec.analysis import AnalysisSourceSpec
from llm_rollout.spec.base import _Model, _warn_deprecated

MAX_CONCURRENCY = 4096
"""Most concurrent streams one validation client holds (each is a connection and a task)."""
MAX_PROMPTS = 100_000
"""Most requests per load level."""
MAX_WORDS = 131_072
"""Most words of a prompt (or tokens of an output): above the context of any served model."""
MAX_LOAD_WORDS = 20_000_000
"""Most words of generated prompts one load holds (num_prompts x words, ~120 MB of text)."""
MAX_REQUEST_RATE = 100_000.0
"""Highest request rate (requests/s) a validation client is asked to send."""
MAX_SECONDS = 86_400.0
"""Longest wait or level: a day (issue 31: ``inf`` waited forever)."""


class SLOSpec(_Model):
    """What the new revision must meet before it is promoted.

    Attributes:
        checks: Expressions ``<metric> <op> <number>`` judged at each of ``judge_concurrency``,
            e.g. ``p95_ttft_ms <= 100``. Metric names carry their unit.
        judge_concurrency: Concurrency levels the checks apply to (10-20 per GPU by default).
        min_successful_requests: Below this many successful requests a level is inconclusive.
        capacity_max_concurrency: When set, also search (by bisection between 1 and this) for the
            highest concurrency that still meets ``checks`` ("concurrent requests per replica").
        capacity_max_request_rate: When set, also search the highest open-loop request rate
            (requests/s) that still meets ``checks``, on a ladder of ``capacity_rate_steps`` rates
            up to this one: Poisson arrivals, or a timed workload file replayed faster or slower.
        capacity_rate_steps: Rungs of that ladder (its resolution is the maximum / steps).
        capacity_repeats: Measurements that settle a value near the boundary: a value is *met*
            only when every one of them meets the checks and *missed* only when none does; mixed
            values lie inside the reported interval. 1 is a plain bisection.
        capacity_max_measurements: Upper bound on each search's measurements (each at most
            ``load.max_duration_s``); when it runs out the interval reported is what was settled.
    """

    checks: list[str] = Field(default_factory=lambda: ["p95_ttft_ms <= 100", "error_rate == 0"])
    judge_concurrency: list[Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]] = Field(default_factory=lambda: [10, 20])
    min_successful_requests: int = Field(10, ge=1)
    capacity_max_concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY)
    capacity_max_request_rate: float | None = Field(None, gt=0, le=MAX_REQUEST_RATE)
    capacity_rate_steps: int = Field(16, ge=2, le=1024)
    capacity_repeats: int = Field(3, ge=1, le=10)
    capacity_max_measurements: int = Field(40, ge=2, le=1000)


class LoadWorkloadSpec(_Model):
    """What the load phase sends, besides the generated prompts (``validation.load.workload``).

    The datasets and their parameters are those of ``vllm bench serve`` (vLLM 0.32,
    ``vllm/benchmarks/datasets/datasets.py``; see :mod:`llm_rollout.validation.workload`):

    Attributes:
        dataset: ``custom`` (a JSONL file of requests: ``--dataset-name custom``), ``random``
            (lengths from a range: ``--dataset-name random``) or ``prefix_repetition`` (shared
            prefixes, RAG-like: ``--dataset-name prefix_repetition``).
        path: ``custom``: the JSONL file (``--dataset-path``), or ``sample:support-rag`` for the
            shipped sample. One request per line: ``prompt`` or ``messages``, ``max_tokens``,
            optionally ``timestamp`` (arrival, seconds from the start; on every line or none).
        time_scale: ``custom``: multiplier from the file's timestamps to seconds
            (``--timed-trace-sec-multiplier``; 0.001 for milliseconds).
        input_len: ``random``: mean prompt length in words (``--random-input-len``; default
            ``load.input_words``).
        output_len: ``random``/``prefix_repetition``: mean output tokens (``--random-output-len``,
            ``--prefix-repetition-output-len``; default ``load.output_tokens``).
        range_ratio: ``random``: lengths vary uniformly by this share around the means
            (``--random-range-ratio``, in [0, 1)).
        prefix_len: ``random``: words of one fixed prefix (``--random-prefix-len``, default 0);
            ``prefix_repetition``: words of each shared prefix (``--prefix-repetition-prefix-len``,
            default ``load.input_words``).
        suffix_len: ``prefix_repetition``: words after the prefix (``--prefix-repetition-suffix-len``,
            default ``load.input_words / 4``).
        num_prefixes: ``prefix_repetition``: distinct prefixes (``--prefix-repetition-num-prefixes``,
            default 10); ``load.num_prompts`` must be at least this.
    """

    dataset: Literal["custom", "random", "prefix_repetition"]
    path: str | None = None
    time_scale: float = Field(1.0, gt=0, le=1e6)
    input_len: int | None = Field(None, ge=1, le=MAX_WORDS)
    output_len: int | None = Field(None, ge=1, le=MAX_WORDS)
    range_ratio: float = Field(0.0, ge=0, lt=1)
    prefix_len: int | None = Field(None, ge=0, le=MAX_WORDS)
    suffix_len: int | None = Field(None, ge=1, le=MAX_WORDS)
    num_prefixes: int | None = Field(None, ge=1, le=MAX_PROMPTS)

    @model_validator(mode="after")
    def _fields_of_the_dataset(self) -> LoadWorkloadSpec:
        allowed = {
            "custom": {"path", "time_scale"},
            "random": {"input_len", "output_len", "range_ratio", "prefix_len"},
            "prefix_repetition": {"prefix_len", "suffix_len", "num_prefixes", "output_len"},
        }[self.dataset]
        # A field left at its default is not "given" (a dumped spec carries every field, e.g. as JSON).
        fields = type(self).model_fields
        stray = sorted(
            name
            for name in fields
            if name not in allowed and name != "dataset" and getattr(self, name) != fields[name].default
        )
        if stray:
            raise SpecError(
                f"validation.load.workload.{stray[0]}",
                f"does not apply to dataset {self.dataset!r} (it takes {', '.join(sorted(allowed))})",
                "remove it or choose the dataset it belongs to",
            )
        if self.dataset == "custom" and not self.path:
            raise SpecError(
                "validation.load.workload.path",
                "dataset 'custom' needs a JSONL file",
                "set path to the file (or sample:support-rag for the shipped sample)",
            )
        return self


class LoadSpec(_Model):
    """The load phase of validation (measured like ``vllm bench serve``).

    Attributes:
        concurrency: Fixed concurrency levels to measure.
        request_rate: Poisson request rate (requests/s) for an extra open-loop level; none by default.
        num_prompts: Requests sent per level.
        max_duration_s: Upper bound on the time spent at one level.
        input_words: Approximate prompt length (words) of generated prompts.
        output_tokens: ``max_tokens`` per request (with ``ignore_eos`` so every request is full length).
        endpoint: ``completions`` or ``chat``.
        warmup_requests: Requests sent and discarded before measuring.
        shared_prefix_words: Words of one shared prefix put in front of every prompt (a RAG-like
            workload: the same retrieved context, different questions); 0 = fully distinct
            prompts. When set, validation also checks that prefix-cache hits rise.
        workload: Send a workload file or a ``vllm bench serve`` shape instead of the generated
            prompts (:class:`LoadWorkloadSpec`). A file with timestamps is replayed open loop at
            its arrival times (one level, ``replay``, judged); otherwise every concurrency level
            draws its requests from the workload in turn. A bare path (``workload: traffic.jsonl``)
            is the file: ``{dataset: custom, path: traffic.jsonl}``.
    """

    concurrency: list[Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]] = Field(default_factory=lambda: [1, 10, 20])
    request_rate: float | None = Field(None, gt=0, le=MAX_REQUEST_RATE)
    num_prompts: int = Field(100, ge=1, le=MAX_PROMPTS)
    max_duration_s: float = Field(120.0, gt=0, le=MAX_SECONDS)
    input_words: int = Field(64, ge=1, le=MAX_WORDS)
    output_tokens: int = Field(64, ge=1, le=MAX_WORDS)
    endpoint: Literal["completions", "chat"] = "completions"
    warmup_requests: int = Field(2, ge=0, le=1000)
    shared_prefix_words: int = Field(0, ge=0, le=MAX_WORDS)
    workload: LoadWorkloadSpec | None = None

    @field_validator("workload", mode="before")
    @classmethod
    def _bare_path_is_a_file(cls, value: Any) -> Any:
        # What people write first (issue 30): `workload: traffic.jsonl` - the custom dataset's file.
        if value is None or isinstance(value, (dict, LoadWorkloadSpec)):
            return value
        if not isinstance(value, str):
            raise SpecError(
                "validation.load.workload",
                f"is a {type(value).__name__}",
                "give the JSONL file (workload: traffic.jsonl) or a mapping such as {dataset: random}",
            )
        if not value.strip():
            raise SpecError(
                "validation.load.workload",
                "is an empty string",
                "give the JSONL file (workload: traffic.jsonl) or a mapping such as {dataset: random}",
            )
        if value in ("custom", "random", "prefix_repetition"):  # a dataset's name, not a file
            raise SpecError(
                "validation.load.workload",
                f"{value!r} names a dataset, not a file",
                f"write workload: {{dataset: {value}}} (with its fields), or the path of a JSONL file",
            )
        return {"dataset": "custom", "path": value}

    @model_validator(mode="after")
    def _workload_or_shared_prefix(self) -> LoadSpec:
        per_prompt = self.input_words + self.shared_prefix_words
        wl = self.workload
        if wl is not None and wl.dataset != "custom":  # the generated shapes (the file has its own cap)
            body = wl.input_len or self.input_words
            if wl.dataset == "prefix_repetition":
                body = wl.suffix_len or max(self.input_words // 4, 1)
            per_prompt = (wl.prefix_len or (self.input_words if wl.dataset == "prefix_repetition" else 0)) + body
        words = self.num_prompts * per_prompt
        if words > MAX_LOAD_WORDS:
            raise SpecError(
                "validation.load.num_prompts",
                f"{self.num_prompts} prompts of {per_prompt} words are {words:,} "
                f"words to generate and hold, over the {MAX_LOAD_WORDS:,} a validation step holds",
                f"lower num_prompts or the prompt length so that their product stays under {MAX_LOAD_WORDS:,}",
            )
        if self.workload is not None and self.shared_prefix_words:
            raise SpecError(
                "validation.load.shared_prefix_words",
                "applies to the generated prompts, not to validation.load.workload",
                "use workload.dataset: prefix_repetition (or random with prefix_len) instead",
            )
        return self


class RecoverySpec(_Model):
    """Did compression keep the model? The compressed candidate against its own uncompressed original.

    Used only when the original is served beside the candidate (``base_url``; ``llm-rollout
    run-local --baseline`` and the demo start it): never against the stable revision, which is
    another model (that question is :class:`ComparisonSpec`'s).

    Attributes:
        base_url: The uncompressed original's endpoint.
        base_model: Model name served at ``base_url`` (default: the candidate's).
        min_token_agreement: Minimum greedy token agreement with the original (0-1).
        checks: Ratio checks against the original at the judged levels (``<stem>_ratio_vs_baseline``),
            e.g. the serving design's 2x output throughput.
        send_api_key: Send the validation API key to ``base_url`` too when it is on another origin
            (scheme, host, port) than the endpoint under validation. Off by default: the key goes
            only to the endpoint's own origin.
    """

    base_url: str | None = None
    base_model: str | None = None
    send_api_key: bool = False
    min_token_agreement: float = Field(0.9, ge=0, le=1)
    checks: list[str] = Field(default_factory=lambda: ["output_throughput_ratio_vs_baseline >= 2"])


class ComparisonSpec(_Model):
    """Is the candidate at least as good as what serves now? (every rollout with a stable revision).

    The stable revision and the candidate are measured in counterbalanced blocks of four rounds
    (candidate, stable, stable, candidate) at one concurrency, so that noise on the machine and
    the cost of being measured right after the other side hit both alike, and judged for
    non-inferiority over the blocks (a trimmed-mean t interval of the block log-ratios, robust to
    a block hit by a pause, :mod:`llm_rollout.validation.stats`): the candidate passes a metric
    when it is not worse than the stable by more than the margin at the stated confidence, fails
    it when it is worse by more than the margin at that confidence, and more blocks are measured
    while neither holds, up to ``max_blocks`` (then the verdict is inconclusive). Tail latency is
    the absolute SLO's job (``slo.checks``); the comparison uses per-round medians by default,
    which a round of 16 requests measures well. Never text agreement: a retrained model
    legitimately says other things; its quality is the correctness suite's score.

    Attributes:
        enabled: Compare with the stable revision when one serves.
        send_api_key: Send the validation API key to a stable URL on another origin than the
            candidate's when that URL was given by hand (``llm-rollout validate --stable-url``).
            In a rollout the platform gives the stable revision's address from the service's
            own names (with KServe each predictor has its own host), and the key goes there
            anyway: it is the same service, holding the same key.
        concurrency: Concurrent streams in each round.
        round_requests: Requests per round and side.
        output_tokens: ``max_tokens`` of each round's requests (with ``ignore_eos``). Longer than
            the load phase's default on purpose: a stream must last long enough for its
            inter-token gaps to be measured on a busy client (a 16-token stream on the tiny model
            lasts ~30 ms and often arrives in one read, leaving no TPOT to compare).
        min_blocks: Blocks before the first look; then a look after every block. The trimmed
            t needs 3 for an interval (2 degrees of freedom); from 4 a candidate 30 % slower is
            not called "not worse" on three blocks that pauses hit alike (``make bench``); it
            calls "worse" from 5.
        max_blocks: Blocks at most (the bound of the sequential test).
        settle_s: Pause before each round that follows the other side's, so that the other
            server is idle while this one is measured. vLLM's multiprocess workers busy-poll
            their shared memory queue for 1 s after their last step (``SpinCondition``,
            busy_loop_s=1, in vllm/distributed/device_communicators/shm_broadcast.py): where
            both servers share a few CPUs and run that executor, ~1.2 s keeps the poll off the
            side measured next. 0 (the default): the servers have their own CPUs (pods in a
            cluster), or run one engine process each (the local platform's
            ``--distributed-executor-backend=uni``).
        confidence: One-sided confidence of every decision, kept over all looks (weighted
            Bonferroni): the last look decides at ``1 - 0.25 (1 - confidence)``, each interim look
            at ``1 - 0.75 (1 - confidence) / (looks - 1)``, which the report and the summary print
            (0.95 over the 21 looks of 4 to 24 blocks: 99.81 % per interim look, 98.75 % at the
            last, where the sign test decides).
        ttft_statistic: The per-round TTFT statistic compared (``median``, ``mean``, ``p<NN>``).
        ttft_margin: Tolerated relative TTFT increase (0.2 = 20 %). With the defaults, the tiny
            model served twice on a quiet 2-core machine is decided "not worse" in ~10 blocks on
            average (``make bench``); on steady GPU serving in ~4, and 10 % decides in a few more.
        tpot_margin: Tolerated relative increase of the mean time per output token (token-weighted).
        throughput_margin: Tolerated relative loss of output throughput (tokens/s of a round).
        quality_tolerance: Share of the correctness suite the candidate may pass less than the
            stable (0: it must pass at least every probe the stable passes, by count).
    """

    enabled: bool = True
    send_api_key: bool = False
    concurrency: int = Field(4, ge=1, le=MAX_CONCURRENCY)
    round_requests: int = Field(16, ge=1, le=10_000)
    output_tokens: int = Field(32, ge=2, le=MAX_WORDS)
    min_blocks: int = Field(4, ge=2, le=1000)
    max_blocks: int = Field(24, ge=2, le=1000)
    settle_s: float = Field(0.0, ge=0, le=60)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    ttft_statistic: str = Field("median", pattern=r"^(mean|median|p\d{1,2})$")
    ttft_margin: float = Field(0.20, ge=0)
    tpot_margin: float = Field(0.20, ge=0)
    throughput_margin: float = Field(0.20, ge=0, lt=1)
    quality_tolerance: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _blocks_in_order(self) -> ComparisonSpec:
        if self.min_blocks > self.max_blocks:
            raise ValueError(f"min_blocks {self.min_blocks} is above max_blocks {self.max_blocks}")
        return self


class QualitySpec(_Model):
    """Does the candidate model the team's texts as well? Likelihood of reference texts, no answers needed.

    Both sides score the same reference texts by likelihood: one prefill per text per side, no
    generation (``/v1/completions`` with ``echo`` and ``logprobs``; :mod:`llm_rollout.validation.quality`),
    each text's cost in *bits per byte* of UTF-8 text, so that different tokenizers compare
    fairly. With a stable revision serving, the per-text differences candidate - stable are
    judged for non-inferiority like the speed comparison (the sign-test interval of the median
    difference, looks on a doubling schedule from ``min_texts`` to ``max_texts``, the error spread
    over the looks). Always - also on a first rollout - the candidate must beat uniform guessing
    over its own vocabulary (``log2(vocabulary)`` bits per token, in bits per byte): a scrambled
    model, a broken quantization or a wrong tokenizer is worse than guessing.

    The texts must be in the model's domain (what it is meant to say well): out-of-domain text is
    hard for every model, so it does not separate a good one from a damaged one.

    Attributes:
        enabled: Ask the question (a stable revision serving: the comparison; always: the floor).
        texts: A JSONL file of reference texts, one ``{"text": ...}`` per line. Default: the
            prompts of ``load.workload`` when it is a custom file, else a small general-English
            sample shipped with the library.
        margin: Tolerated increase of the median per-text bits per byte (absolute; 0.05 bits per
            byte is a 16 % higher perplexity at ~4.3 bytes per token, far below what a damaged
            model shows and above what a retrain or a good quantization does).
        confidence: One-sided confidence of the decision, kept over all looks (Bonferroni):
            each look decides at ``1 - (1 - confidence) / looks``, the figure the report prints
            (0.95 over the 4 looks of 8, 16, 32 and 64 texts: 98.75 % per look).
        min_texts: Texts at the first look (looks then double). With the default 95 % over 4
            looks a decision needs 7 texts (``P(all on one side) = 1/128``).
        max_texts: Texts at most (the bound of the sequential rule; fewer when fewer are given).
        floor: Require the candidate to beat uniform guessing over its vocabulary.
        vocab_size: The served model's vocabulary size, when the server cannot be asked
            (vLLM tells it through its ``logit_bias`` check; see the module doc).
        max_text_chars: Texts longer than this are cut at a word boundary (a text must fit the
            served context).
    """

    enabled: bool = True
    texts: str | None = None
    margin: float = Field(0.05, ge=0, le=8)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    min_texts: int = Field(8, ge=2, le=10_000)
    max_texts: int = Field(64, ge=2, le=10_000)
    floor: bool = True
    vocab_size: int | None = Field(None, ge=2, le=100_000_000)
    max_text_chars: int = Field(2000, ge=16, le=1_000_000)

    @model_validator(mode="after")
    def _texts_in_order(self) -> QualitySpec:
        if self.min_texts > self.max_texts:
            raise SpecError(
                "validation.quality.min_texts",
                f"{self.min_texts} is above max_texts {self.max_texts}",
                "lower min_texts or raise max_texts",
            )
        return self


_DEPRECATED_VALIDATION = {
    "baseline_url": "base_url",
    "baseline_model": "base_model",
    "min_token_agreement": "min_token_agreement",
}
"""Old ``validation.*`` fields and their place in ``validation.recovery`` (mapped with a warning)."""


class ValidationSpec(_Model):
    """The validation gate.

    Attributes:
        readiness_timeout_s: How long the endpoint may take to list the model and stream once.
        smoke_suite: Run the built-in correctness smoke suite.
        suite_file: A user-supplied correctness suite (JSONL, or a YAML/JSON list, of prompts and
            expectations). Probes marked ``must_pass`` fail the gate on their own; the others are
            scored: against the stable revision item by item (McNemar's exact test, at
            ``comparison.confidence``), on a first rollout against ``suite_min_score``.
        suite_min_score: The share of the suite's scored probes a first rollout (no stable
            revision) must get right (1: every one).
        recovery: Compressed against its uncompressed original (agreement, speed-up), when the
            original is served beside it. The old ``baseline_url``, ``baseline_model``,
            ``min_token_agreement`` and ``slo.baseline_checks`` map here (with a warning).
        comparison: The candidate against the stable revision (non-inferiority).
        quality: Likelihood of reference texts: against the stable revision, and the floor of
            uniform guessing (:class:`QualitySpec`).
        load: The load phase.
        slo: The SLO checks.
        api_key_env: Environment variable holding the endpoint's API key (never logged).
        api_key_file: File (e.g. a mounted secret) holding the API key.
        tls_verify: Verify the endpoint's TLS certificate.
        ca_bundle: CA bundle file for TLS verification.
        metrics_urls: Prometheus text endpoints to scrape (e.g. per llm-d role: ``prefill``,
            ``decode``, and ``epp`` for the endpoint picker).
        log_text: Log prompts and completions (off by default).
        expect_disaggregation: Prove prefill/decode disaggregation from the roles' metrics
            (prefill served the prefills, decode did not re-run them); a prefill role that served
            nothing fails validation. ``None``: prove it whenever ``metrics_urls`` has a
            ``prefill`` role.
        pd_max_decode_recompute_ratio: Share of decode's prompt tokens it may compute itself
            (the rest must arrive from prefill by KV transfer or hit its prefix cache).
        expect_prefix_cache_hits: Require prefix-cache hits to rise over the load. ``None``: when
            ``load.shared_prefix_words`` is set (a repeated-prefix workload).
        analysis: Where the canary steps' live analysis reads the users' traffic (the cluster's
            Prometheus and its token; :class:`~llm_rollout.spec.analysis.AnalysisSourceSpec`).
    """

    readiness_timeout_s: float = Field(300.0, gt=0, le=MAX_SECONDS)
    smoke_suite: bool = True
    suite_file: str | None = None
    suite_min_score: float = Field(1.0, ge=0, le=1)
    recovery: RecoverySpec = Field(default_factory=RecoverySpec)
    comparison: ComparisonSpec = Field(default_factory=ComparisonSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    load: LoadSpec = Field(default_factory=LoadSpec)
    slo: SLOSpec = Field(default_factory=SLOSpec)
    api_key_env: str | None = None
    api_key_file: str | None = None
    tls_verify: bool = True
    ca_bundle: str | None = None
    metrics_urls: dict[str, str] = Field(default_factory=dict)
    log_text: bool = False
    expect_disaggregation: bool | None = None
    pd_max_decode_recompute_ratio: float = Field(0.5, ge=0, le=1)
    expect_prefix_cache_hits: bool | None = None
    analysis: AnalysisSourceSpec = Field(default_factory=AnalysisSourceSpec)

    @model_validator(mode="before")
    @classmethod
    def _map_deprecated(cls, data: Any) -> Any:
        """Moves the pre-0.2 baseline fields into ``recovery``, saying so once per field."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        moved: dict[str, Any] = {}
        for old, new in _DEPRECATED_VALIDATION.items():
            if old in data:
                moved[new] = data.pop(old)
                _warn_deprecated(f"validation.{old}", f"validation.recovery.{new}")
        slo = data.get("slo")
        if isinstance(slo, dict) and "baseline_checks" in slo:
            slo = dict(slo)
            moved["checks"] = slo.pop("baseline_checks")
            data["slo"] = slo
            _warn_deprecated("validation.slo.baseline_checks", "validation.recovery.checks")
        if moved:
            recovery = data.get("recovery")
            if isinstance(recovery, BaseModel):
                recovery = recovery.model_dump()
            clash = sorted(set(moved) & set(recovery or {}))
            if clash:
                raise ValueError(
                    f"validation.recovery.{clash[0]} is set together with its deprecated old name; keep the new one"
                )
            data["recovery"] = {**(recovery or {}), **moved}
        return data
