"""The gate's one typed answer: every question it asks returns an :class:`Answer`; the verdict is the worst.

Each phase of the gate (readiness, the correctness suite, quality, recovery against the original,
the comparison with the stable revision, the SLO, the llm-d proofs, sizing, the live analysis of a
canary step) answers one question. An answer carries

* ``decision``: one vocabulary for every question, ``pass`` / ``fail`` / ``inconclusive``
  (:data:`Decision`); ``said`` is the question's own word for it in the summary line
  (``non-inferior``, ``met``, ``kept``...), never a second vocabulary to branch on;
* ``evidence``: typed numbers (:class:`Evidence`: value, interval, confidence, what was needed,
  or ``None`` with why it is unmeasured), each with its line for people;
* ``reasons``: why a decision is not ``pass``, one line each (the step's summary lists them).

:class:`Verdict` is the worst answer (``fail`` over ``inconclusive`` over ``pass``) with every
answer kept; the summary line, the KFP Metrics, the HTML report and the step outputs are rendered
from it (:mod:`llm_rollout.validation.summary`, :mod:`llm_rollout.validation.report`). A question
that was not asked has no answer; the verdict of no answer at all is ``inconclusive`` (nothing
was shown to pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["pass", "fail", "inconclusive"]
"""The one decision vocabulary of the gate (and of every phase in it)."""

DECISIONS: tuple[Decision, ...] = ("pass", "inconclusive", "fail")
"""The decisions from best to worst."""

_RANK = {d: i for i, d in enumerate(DECISIONS)}


def worst(decisions: Iterable[Decision], *, empty: Decision = "inconclusive") -> Decision:
    """The worst of ``decisions`` (``fail`` > ``inconclusive`` > ``pass``); ``empty`` when there are none."""
    out: Decision | None = None
    for d in decisions:
        if d not in _RANK:
            raise ValueError(f"not a gate decision: {d!r} (one of {', '.join(DECISIONS)})")
        if out is None or _RANK[d] > _RANK[out]:
            out = d
    return empty if out is None else out


def decision_of(ok: bool | None) -> Decision:
    """``True`` -> ``pass``, ``False`` -> ``fail``, ``None`` (could not tell) -> ``inconclusive``."""
    return "inconclusive" if ok is None else "pass" if ok else "fail"


def ok_of(decision: Decision) -> bool | None:
    """The inverse of :func:`decision_of`."""
    return {"pass": True, "fail": False}.get(decision)


@dataclass(frozen=True)
class Evidence:
    """One measured number behind an answer, or the fact that it could not be measured.

    Attributes:
        name: What was measured, unit in the name as in the Metrics (``p95_ttft_ms``,
            ``token_agreement_ratio``, ``mean_tpot_ms_ratio``).
        value: The measured value; ``None`` when unmeasured (never a stand-in 0).
        low: The interval's lower end, when the value has one.
        high: The interval's upper end.
        confidence: The interval's confidence (0.95), when it has one.
        needed: What was needed to pass, as people read it (``<= 1.1``, ``>= 0.9``); empty when
            the number is context, not a check.
        unmeasured: Why ``value`` is ``None`` (``the streams arrived in one piece``).
        line: The evidence as one line for the summary and the report.
        level: The load level it was measured at (``c4``), when it belongs to one.
        metric: The KFP Metrics name of ``value`` (empty: not in the Metrics).
        metric_low: The Metrics name of ``low`` (empty: not there).
        metric_high: The Metrics name of ``high`` (empty: not there).

    A line without a number (a failed probe's name) is evidence with ``value`` None and no
    ``unmeasured`` reason: :meth:`note`.
    """

    name: str
    value: float | None
    low: float | None = None
    high: float | None = None
    confidence: float | None = None
    needed: str = ""
    unmeasured: str = ""
    line: str = ""
    level: str = ""
    metric: str = ""
    metric_low: str = ""
    metric_high: str = ""

    @classmethod
    def note(cls, line: str) -> Evidence:
        """A line of evidence without a number of its own."""
        return cls("note", None, line=line)

    def metrics(self) -> dict[str, float]:
        """What this evidence puts in the KFP Metrics: its named value and interval ends that exist."""
        out: dict[str, float] = {}
        for name, value in ((self.metric, self.value), (self.metric_low, self.low), (self.metric_high, self.high)):
            if name and value is not None:
                out[name] = float(value)
        return out

    @property
    def measured(self) -> bool:
        """Whether there is a number."""
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "name": self.name, "value": self.value, "low": self.low, "high": self.high,
            "confidence": self.confidence, "needed": self.needed, "unmeasured": self.unmeasured,
            "line": self.line, "level": self.level, "metric": self.metric, "metric_low": self.metric_low,
            "metric_high": self.metric_high,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """The inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def __str__(self) -> str:
        return self.line or (
            f"{self.name}: {'unmeasured' if self.value is None else f'{self.value:.4g}'}"
            + (f" ({self.unmeasured})" if self.unmeasured else "")
        )


@dataclass
class Answer:
    """One question of the gate, answered.

    Attributes:
        key: Which question (``readiness``, ``correctness``, ``quality``, ``recovery``,
            ``comparison``, ``slo``, ``disaggregation``, ``prefix_cache``, ``sizing``,
            ``load``, ``analysis``); ``<key>_ok`` in the Metrics.
        decision: ``pass``, ``fail`` or ``inconclusive``.
        question: The question as people read it.
        against: What the candidate was held against (the stable revision's URL, the SLO's
            checks, the suite's expected answers).
        said: The question's own word for the decision in the summary line (``non-inferior``,
            ``met``, ``kept``); the decision itself when empty.
        evidence: The numbers behind the decision (each with its line).
        reasons: Why the decision is not ``pass``: one line each, as the step's summary lists
            them (empty on pass).
        summarized: Whether the summary line names this answer (the questions a reader asks;
            readiness, the load and the proofs speak through their reasons only).
    """

    key: str
    decision: Decision
    question: str = ""
    against: str = ""
    said: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    summarized: bool = True

    def __post_init__(self) -> None:
        if self.decision not in _RANK:
            raise ValueError(f"{self.key}: not a gate decision: {self.decision!r} (one of {', '.join(DECISIONS)})")

    @property
    def ok(self) -> bool | None:
        """True on pass, False on fail, None when inconclusive."""
        return ok_of(self.decision)

    @property
    def lines(self) -> list[str]:
        """The evidence as people read it (evidence without a line is for the Metrics only)."""
        return [e.line for e in self.evidence if e.line]

    @property
    def word(self) -> str:
        """How the summary line says the decision (``said``, else the decision)."""
        return self.said or self.decision

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``validation.json``'s ``answers``)."""
        return {
            "key": self.key, "decision": self.decision, "question": self.question, "against": self.against,
            "said": self.word, "ok": self.ok, "lines": self.lines, "evidence": [e.to_dict() for e in self.evidence],
            "reasons": list(self.reasons), "summarized": self.summarized,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Answer:
        """The inverse of :meth:`to_dict` (e.g. read back from ``validation.json``)."""
        return cls(
            key=str(data["key"]),
            decision=data["decision"],
            question=str(data.get("question") or ""),
            against=str(data.get("against") or ""),
            said=str(data.get("said") or ""),
            evidence=[Evidence.from_dict(e) for e in data.get("evidence") or []],
            reasons=[str(r) for r in data.get("reasons") or []],
            summarized=bool(data.get("summarized", True)),
        )


@dataclass
class Verdict:
    """The gate's verdict: the worst of its answers, with every answer kept.

    Attributes:
        answers: Every question asked, in the order the gate asked them.
    """

    answers: list[Answer] = field(default_factory=list)

    @property
    def decision(self) -> Decision:
        """The worst answer's decision; ``inconclusive`` with no answer."""
        return worst(a.decision for a in self.answers)

    @property
    def reasons(self) -> list[str]:
        """Every answer's reasons in the gate's order; on ``fail`` the failures come first.

        Inconclusive notes stay on a failing verdict (they explain), after the failures.
        """
        lines = [r for a in self.answers for r in a.reasons]
        if self.decision == "fail":
            lines.sort(key=_is_note)
        return lines

    def answer(self, key: str) -> Answer | None:
        """The answer to question ``key``, if it was asked."""
        return next((a for a in self.answers if a.key == key), None)

    def add(self, answer: Answer) -> Answer:
        """Adds an answer, or replaces the one with its key where it stands (a later phase completes
        an earlier answer: the comparison the suite's pairing); returns it."""
        for i, a in enumerate(self.answers):
            if a.key == answer.key:
                self.answers[i] = answer
                return answer
        self.answers.append(answer)
        return answer

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {"decision": self.decision, "answers": [a.to_dict() for a in self.answers]}

    @classmethod
    def from_answers(cls, answers: Sequence[Mapping[str, Any]]) -> Verdict:
        """A verdict from answers' plain data (``validation.json``'s ``answers``)."""
        return cls([Answer.from_dict(a) for a in answers])


def _is_note(line: str) -> bool:
    """An inconclusive note (it explains a failing verdict; the failures come first)."""
    return "inconclusive" in line
