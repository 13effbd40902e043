"""The deploy gate's choice among detectors and the decision it writes for deploy."""

from __future__ import annotations

import pytest

from container_component_src.evaluation.decision import DeployDecision, gate_choice, keeps_promise
from tests.decisions import SKAB_A_DETECTORS, skab_a_decision


def test_a_detector_keeping_its_promise_goes_before_a_higher_fc1() -> None:
    assert gate_choice(SKAB_A_DETECTORS, promised=0.01, tolerance=2.0, deploy_threshold=0.5) == "model"
    # Looser tolerance: the raw signal (5x) keeps it too, and its Fc1 is higher than the model's.
    assert gate_choice(SKAB_A_DETECTORS, promised=0.01, tolerance=5.0, deploy_threshold=0.5) == "raw_signal"


def test_fc1_decides_when_no_trusted_detector_passes_the_gate() -> None:
    assert gate_choice(SKAB_A_DETECTORS, promised=0.01, tolerance=0.0, deploy_threshold=0.5) == "pca"  # off
    assert gate_choice(SKAB_A_DETECTORS, promised=0.001, tolerance=2.0, deploy_threshold=0.5) == "pca"  # none keeps it
    # The model keeps its promise but would not be deployed: PCA, which would, is served.
    assert gate_choice(SKAB_A_DETECTORS, promised=0.01, tolerance=2.0, deploy_threshold=0.7) == "pca"


def test_the_model_wins_a_tie() -> None:
    level = {name: {"fc1": 0.8, "false_alarm_rate": 0.01} for name in ("pca", "model", "raw_signal")}
    assert gate_choice(level, promised=0.01, tolerance=2.0, deploy_threshold=0.5) == "model"
    assert gate_choice(level, promised=0.01, tolerance=0.0, deploy_threshold=0.5) == "model"


def test_the_promise_is_kept_within_the_tolerance_and_never_when_off() -> None:
    assert keeps_promise(0.02, 0.01, 2.0) and not keeps_promise(0.0201, 0.01, 2.0)
    assert not keeps_promise(0.0, 0.01, 0.0)
    assert not keeps_promise(float("nan"), 0.01, 2.0)  # a test set without normal rows


def test_the_choice_says_why_a_lower_fc1_is_served() -> None:
    choice = skab_a_decision("model").choice
    assert choice == (
        "the model: its false alarms keep their promise (1.15% of normal rows against 1.00% promised, within 2x) "
        "where PCA reconstruction error's higher Fc1, 0.833 against 0.649, comes with 10.60%"
    )
    assert skab_a_decision("model").promise_kept and not skab_a_decision("pca").promise_kept


def test_the_choice_says_when_no_trusted_detector_passes() -> None:
    assert skab_a_decision("pca").choice == (
        "PCA reconstruction error, not the model: Fc1 0.833 against the model's 0.649 at the same threshold rule "
        "(+0.184); no detector that keeps its false-alarm promise within 2x passes the gate"
    )
    assert skab_a_decision("pca", tolerance=0.0).choice.endswith("(+0.184)")


def test_the_choice_names_the_rule_the_threshold_follows() -> None:
    from dataclasses import replace

    following = replace(skab_a_decision("pca"), follow={"rule": "spread", "level": 0.1, "unit": 0.05})
    assert following.choice.endswith("passes the gate; its threshold follows each run (spread rule)")
    assert DeployDecision.from_summary({"deploy": following.to_dict()}).choice == following.choice


def test_the_decision_survives_the_summary_round_trip() -> None:
    decision = skab_a_decision("model")
    assert DeployDecision.from_summary({"deploy": decision.to_dict()}) == decision
    # A summary written before the gate weighed promises reads as Fc1 alone.
    old = {k: v for k, v in decision.to_dict().items() if k not in ("promise_tolerance", "detectors")}
    read = DeployDecision.from_summary({"deploy": old})
    assert read.promise_tolerance == 0.0 and read.detectors == {}
    assert read.choice == "the model: no classical detector scores a higher Fc1 at the same threshold rule"


@pytest.mark.parametrize("tolerance", [-1.0, float("nan")])
def test_a_negative_tolerance_is_refused(tolerance: float) -> None:
    from container_component_src.errors import OptionError
    from container_component_src.evaluation.evaluate import EvaluateOptions

    with pytest.raises(OptionError, match="--promise-tolerance must be 0"):
        EvaluateOptions(promise_tolerance=tolerance)


def test_a_negative_follow_window_is_refused() -> None:
    from container_component_src.errors import OptionError
    from container_component_src.evaluation.evaluate import EvaluateOptions

    with pytest.raises(OptionError, match="--follow-window must be 0 .the whole run. or more rows, got -5"):
        EvaluateOptions(follow_window=-5)


@pytest.mark.parametrize("detectors", [["model"], {"model": 0.5}, {"model": {"fc1": 0.5}}])
def test_a_malformed_detectors_block_is_one_clear_error(detectors: object) -> None:
    from container_component_src.storage import InputError

    block = {**skab_a_decision().to_dict(), "detectors": detectors}
    with pytest.raises(InputError, match="s.json has no complete 'deploy' block"):
        DeployDecision.from_summary({"deploy": block}, "s.json")
