"""The local platform's stepped canary with live analysis: the weighted router at the service's
address moves through ``canary.steps`` and each step's analysis judges what the users get.

Split from :mod:`llm_rollout.local.platform` (whose ``promote`` calls :func:`analysed_steps`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm_rollout import steplog
from llm_rollout.errors import PermanentError
from llm_rollout.local.router import WeightedRouter
from llm_rollout.record import DeploymentRecord
from llm_rollout.validation.analysis_steps import (
    StepAnalysis,
    gate_answer,
    no_analysis_note,
    recorded_steps,
    run_step,
    step_lines,
)

if TYPE_CHECKING:
    from llm_rollout.local.platform import LocalPlatform

DRAIN_S = 60.0
"""How long a rollback waits for the candidate's requests in flight (the users it was serving)."""


def analysed_steps(platform: LocalPlatform, rec: DeploymentRecord, run_id: str) -> list[StepAnalysis]:
    """The stepped canary with live analysis, before the promotion is recorded.

    A :class:`~llm_rollout.local.router.WeightedRouter` listens at the service's address
    (``router_port``) with the stable server and the candidate behind it; for each step of
    ``canary.steps`` below 100 its weight moves to the step's and the step's analysis runs
    (:func:`llm_rollout.validation.analysis_steps.run_step`, the local servers scraped with
    ``pod=<server name>``). A failed analysis, or one still inconclusive at the step's deadline,
    moves every new user to the stable, waits (at most ``DRAIN_S``) for the candidate's requests
    in flight to finish, rolls the candidate back with the analysis' reasons and raises (the error
    names the step, its weight and the analysis' reasons). Nothing is stored between
    steps: a promote rerun after a crash analyses every step again. Without
    ``validation.analysis.prometheus_url`` nothing runs and the log says that no live analysis ran.

    Raises:
        PermanentError: A step's analysis did not pass (the candidate was rolled back).
    """
    note = no_analysis_note(platform.spec)
    if note:
        steplog.log(f"promote-model: {note}")
    if not platform.spec.validation.analysis.prometheus_url or note:
        return []
    if rec.stable is None or not rec.stable.endpoint_url or not rec.endpoint_url:
        steplog.log("promote-model: no live analysis ran: no stable server serves beside the candidate")
        return []
    router = WeightedRouter(
        rec.stable.endpoint_url, rec.endpoint_url, weight=0, host=platform.spec.local.host, port=platform.router_port
    ).start()
    steplog.log(f"promote-model: the service's address {router.url} splits the users by canary.steps")
    try:
        with recorded_steps() as analysed:
            for percent in platform.spec.canary.weights:
                if percent >= 100:
                    break
                router.set_weight(percent)
                step = run_step(platform.spec, percent, flavor="local", candidate=rec.member, stable=rec.stable.member)
                if step is None:
                    continue
                for line in step_lines(step):
                    steplog.log(f"promote-model: {line}")
                if step.answer.decision != "pass":
                    verdict, why = gate_answer(step)
                    router.set_weight(0)
                    left = router.drain("candidate", DRAIN_S)
                    if left:
                        steplog.log(f"promote-model: {left} request(s) still on the candidate after {DRAIN_S:g} s")
                    where = f"step {step.step} ({percent}% traffic)"
                    done = platform.rollback(rec, reason=f"live analysis at {where}: {verdict}: {why}", run_id=run_id)
                    raise PermanentError(
                        f"promotion of {rec.member} stopped at {where}: the live analysis said "
                        f"{verdict!r} ({why[:900]}); rolled back: {done.message}"
                    )
    finally:
        router.stop()
    return analysed
