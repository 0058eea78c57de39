"""The promotion gate: a pure decision, with every reason, from candidate and champion metrics and a policy."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.core.config import LOWER_IS_BETTER, GatePolicy


@dataclass(frozen=True)
class Scores:
    """A model's holdout metrics and, optionally, its per-slice metrics ``{column: {value: metrics}}``."""

    metrics: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class PromotionDecision:
    """Pass or fail, with one line per check (``PASS ...`` / ``FAIL ...``), failures first."""

    passed: bool
    reasons: list[str]

    @property
    def failures(self) -> list[str]:
        return [r for r in self.reasons if r.startswith("FAIL")]

    def summary(self) -> str:
        """One line for logs and tags."""
        verdict = "passed" if self.passed else "failed"
        return f"gate {verdict}: " + ("; ".join(self.failures) if self.failures else f"{len(self.reasons)} checks ok")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _better(metric: str) -> str:
    return "lower" if metric in LOWER_IS_BETTER else "higher"


def should_promote(candidate: Scores, champion: Scores | None, policy: GatePolicy) -> PromotionDecision:
    """Decide whether ``candidate`` may replace ``champion`` under ``policy``.

    Checks, each giving a reason: absolute floors (ceilings for lower-is-better metrics); no regression against
    the champion beyond ``max_regression``; every slice with enough rows above the slice floor. A metric the
    policy needs but the candidate lacks fails the check.
    """
    reasons: list[str] = []
    for metric, bound in sorted(policy.floors.items()):
        value = candidate.metrics.get(metric, math.nan)
        lower = metric in LOWER_IS_BETTER
        ok = math.isfinite(value) and (value <= bound if lower else value >= bound)
        word = "ceiling" if lower else "floor"
        reasons.append(f"{'PASS' if ok else 'FAIL'} {metric} {value:.4f} vs {word} {bound:.4f}")

    if champion is None:
        reasons.append("PASS no champion to compare with")
    else:
        for metric, margin in sorted(policy.max_regression.items()):
            value = candidate.metrics.get(metric, math.nan)
            base = champion.metrics.get(metric, math.nan)
            if not math.isfinite(base):
                reasons.append(f"PASS {metric}: champion has no value to compare with")
                continue
            lower = metric in LOWER_IS_BETTER
            regression = (value - base) if lower else (base - value)
            ok = math.isfinite(value) and regression <= margin
            reasons.append(
                f"{'PASS' if ok else 'FAIL'} {metric} {value:.4f} vs champion {base:.4f} "
                f"({_better(metric)} is better; allowed regression {margin:.4f}, got {regression:+.4f})"
            )

    if policy.slice_floor is not None:
        floor = policy.slice_floor
        lower = floor.metric in LOWER_IS_BETTER
        checked = 0
        for column, values in sorted(candidate.slices.items()):
            for slice_value, metrics in sorted(values.items()):
                if metrics.get("rows", 0) < floor.min_rows:
                    continue
                checked += 1
                score = metrics.get(floor.metric, math.nan)
                ok = math.isfinite(score) and (score <= floor.bound if lower else score >= floor.bound)
                if not ok:
                    reasons.append(
                        f"FAIL slice {column}={slice_value}: {floor.metric} {score:.4f} {'>' if lower else '<'} "
                        f"{floor.bound:.4f} ({int(metrics.get('rows', 0))} rows)"
                    )
        if checked == 0 and candidate.slices:
            reasons.append(f"PASS no slice has {floor.min_rows}+ rows to check")
        elif not any(r.startswith("FAIL slice") for r in reasons):
            reasons.append(
                f"PASS all {checked} slices with {floor.min_rows}+ rows have {floor.metric} "
                f"{'<=' if lower else '>='} {floor.bound}"
            )

    passed = not any(r.startswith("FAIL") for r in reasons)
    reasons.sort(key=lambda r: not r.startswith("FAIL"))
    return PromotionDecision(passed=passed, reasons=reasons)


def promotion_decision(policy: GatePolicy, evaluation: dict[str, Any]) -> PromotionDecision:
    """:func:`should_promote` on the output of ``evaluate``."""
    candidate = Scores(evaluation["candidate"], evaluation.get("candidate_slices") or {})
    champion = Scores(evaluation["champion"]) if evaluation.get("champion") else None
    return should_promote(candidate, champion, policy)
