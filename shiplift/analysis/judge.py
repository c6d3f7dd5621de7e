"""The judge of an analysis step: success, failure or inconclusive per measurement.

Semantics follow Argo Rollouts' AnalysisRun: each measurement is judged on its own; as soon
as ``failure_limit`` measurements have failed (at least one), the analysis fails — so a bad
version is caught within ``interval × failure_limit``; no traffic at all is *inconclusive* — it
never passes — and an analysis that ends inconclusive pauses the rollout for a person. A
measurement that could not be taken (provider down) is an error; ``consecutive_error_limit``
errors in a row abort too, and fewer make the analysis inconclusive (it never passes on them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from shiplift.analysis import Measurement
from shiplift.config import AnalysisConfig


class Result(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class Verdict(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


def judge(measurement: Measurement, config: AnalysisConfig) -> tuple[Result, str]:
    """One measurement against the thresholds of ``config``."""
    rate = measurement.success_rate
    if rate is None:
        return Result.INCONCLUSIVE, "no traffic reached the version"
    reasons = []
    if config.success_rate_min is not None and rate < config.success_rate_min:
        reasons.append(f"success rate {rate:.3f} < {config.success_rate_min}")
    p95 = measurement.p95_ms
    if config.p95_latency_ms_max is not None and p95 is not None and p95 > config.p95_latency_ms_max:
        reasons.append(f"p95 latency {p95:.0f} ms > {config.p95_latency_ms_max:g} ms")
    if reasons:
        return Result.FAILURE, "; ".join(reasons)
    shown = f", p95 {p95:.0f} ms" if p95 is not None else ""
    return Result.SUCCESS, f"success rate {rate:.3f}{shown} over {measurement.requests:.0f} requests"


@dataclass
class Analysis:
    """The running tally of one analysis step."""

    config: AnalysisConfig
    consecutive_error_limit: int = 4
    results: list[tuple[Result, str]] = field(default_factory=list)

    def add(self, measurement: Measurement | None, error: str | None = None) -> tuple[Result, str]:
        entry = (
            (Result.ERROR, error or "measurement failed")
            if measurement is None
            else judge(measurement, self.config)
        )
        self.results.append(entry)
        return entry

    @property
    def verdict(self) -> Verdict:
        failures = sum(1 for r, _ in self.results if r is Result.FAILURE)
        if failures >= max(1, self.config.failure_limit):
            return Verdict.FAILED
        errors = 0
        for result, _ in reversed(self.results):
            if result is not Result.ERROR:
                break
            errors += 1
        if errors >= self.consecutive_error_limit:
            return Verdict.FAILED
        if len(self.results) < self.config.count:
            return Verdict.RUNNING
        if any(r in (Result.INCONCLUSIVE, Result.ERROR) for r, _ in self.results):
            return Verdict.INCONCLUSIVE
        return Verdict.PASSED
