"""The analysis judge: thresholds, failure limit, no traffic is never a pass."""

from __future__ import annotations

from shiplift.analysis import Measurement
from shiplift.analysis.judge import Analysis, Result, Verdict, judge
from shiplift.analysis.traefik import quantile_ms
from shiplift.config import AnalysisConfig

CFG = AnalysisConfig(
    interval_seconds=1, count=3, success_rate_min=0.99, p95_latency_ms_max=500, failure_limit=1
)
GOOD = Measurement(requests=200, failed=0, p95_ms=20)


def test_each_measurement_is_judged_against_the_thresholds() -> None:
    assert judge(GOOD, CFG)[0] is Result.SUCCESS
    result, why = judge(Measurement(requests=200, failed=100, p95_ms=20), CFG)
    assert result is Result.FAILURE and "success rate 0.500 < 0.99" in why
    result, why = judge(Measurement(requests=200, failed=0, p95_ms=800), CFG)
    assert result is Result.FAILURE and "p95 latency 800 ms > 500 ms" in why
    result, why = judge(Measurement(requests=0, failed=0, p95_ms=None), CFG)
    assert result is Result.INCONCLUSIVE and "no traffic" in why


def test_the_first_failure_fails_with_failure_limit_one() -> None:
    analysis = Analysis(CFG)
    analysis.add(GOOD)
    assert analysis.verdict is Verdict.RUNNING
    analysis.add(Measurement(requests=100, failed=50, p95_ms=10))
    assert analysis.verdict is Verdict.FAILED


def test_passes_after_count_successes_and_pauses_when_inconclusive() -> None:
    passing = Analysis(CFG)
    for _ in range(3):
        passing.add(GOOD)
    assert passing.verdict is Verdict.PASSED
    quiet = Analysis(CFG)
    for m in (GOOD, Measurement(0, 0, None), GOOD):
        quiet.add(m)
    assert quiet.verdict is Verdict.INCONCLUSIVE, "no traffic never passes: a person decides"


def test_consecutive_errors_fail() -> None:
    analysis = Analysis(CFG, consecutive_error_limit=2)
    analysis.add(None, "metrics endpoint down")
    assert analysis.verdict is Verdict.RUNNING
    analysis.add(None, "metrics endpoint down")
    assert analysis.verdict is Verdict.FAILED


def test_quantile_interpolates_inside_a_bucket() -> None:
    buckets = {0.1: 50.0, 0.5: 100.0, float("inf"): 100.0}
    assert quantile_ms(buckets, 0.5) == 100.0
    assert abs((quantile_ms(buckets, 0.95) or 0) - 460.0) < 1e-6
    assert quantile_ms({0.1: 0.0, float("inf"): 0.0}, 0.95) is None
