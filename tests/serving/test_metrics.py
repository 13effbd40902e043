"""The server's own metrics: the watch on the served threshold's promise."""

import logging

import pytest
from prometheus_client import REGISTRY

from container_component_src.evaluation.decision import ALARMS_PER_BLOCK
from container_component_src.serving.metrics import PromiseWatch


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_a_block_holds_enough_rows_to_judge_the_promise() -> None:
    assert PromiseWatch(0.01, 2.0).block_rows == 100 * ALARMS_PER_BLOCK
    assert PromiseWatch(0.001, 2.0).block_rows == 1000 * ALARMS_PER_BLOCK
    assert _gauge("eclss_promised_false_alarm_rate") == 0.001


def test_a_broken_promise_is_logged_once_as_it_starts_and_once_as_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    watch = PromiseWatch(0.1, 2.0)  # blocks of 1,000 rows; more than 20 % flagged breaks it
    caplog.set_level(logging.INFO, logger="container_component_src.serving.metrics")
    for _ in range(10):
        watch.saw(100, 20)  # 20 %: within twice the promise
    assert not caplog.records and _gauge("eclss_block_flagged_share") == pytest.approx(0.2)
    for _ in range(3):
        watch.saw(600, 300)  # every request completes a block (a request is never split)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one line as it starts, not one per block"
    assert "flagged 50.00% of the last 1,200 rows scored, 5x the 10.00% of normal rows" in warnings[0].getMessage()
    assert _gauge("eclss_block_flagged_share") == pytest.approx(0.5)
    watch.saw(1000, 10)
    assert caplog.records[-1].levelno == logging.INFO and "within the promise again" in caplog.records[-1].getMessage()
    assert len(caplog.records) == 2


def test_tolerance_0_keeps_the_gauges_and_judges_nothing(caplog: pytest.LogCaptureFixture) -> None:
    watch = PromiseWatch(0.1, 0.0, observed=0.9)
    watch.saw(1000, 1000)
    assert not caplog.records and _gauge("eclss_block_flagged_share") == 1.0


def test_a_promise_broken_in_evaluation_is_said_at_start(caplog: pytest.LogCaptureFixture) -> None:
    PromiseWatch(0.01, 2.0, observed=0.015)
    assert not caplog.records, "1.5 % is within twice 1 %"
    PromiseWatch(0.01, 2.0, observed=0.15)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "flagged 15.00% of the test's normal rows in evaluation, 15x the 1.00% it promises" in record.getMessage()
