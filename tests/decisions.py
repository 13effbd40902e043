"""A deploy decision as the gate makes it on SKAB protocol A with `drift_weight` 0 (the model's and
PCA's figures as measured on 2026-12-07): PCA scores the higher Fc1 but flags ten times the alarms
its threshold promises, the model keeps its promise. The raw signal's are made up to sit between
them (measured: 0.32 %, Fc1 0.396). For the tests of the gate, the report and the local summary."""

from __future__ import annotations

from container_component_src.evaluation.decision import DeployDecision

SKAB_A_DETECTORS = {
    "model": {"fc1": 0.649, "false_alarm_rate": 0.0115},
    "raw_signal": {"fc1": 0.70, "false_alarm_rate": 0.05},
    "pca": {"fc1": 0.833, "false_alarm_rate": 0.106},
}


def skab_a_decision(detector: str = "model", tolerance: float = 2.0) -> DeployDecision:
    """The decision that serves `detector`, as a gate with `tolerance` would write it."""
    return DeployDecision(
        fc1=SKAB_A_DETECTORS[detector]["fc1"],
        threshold=3.0,
        evaluated_threshold=3.0,
        smoothing_window=1,
        val_quantile=0.99,
        detector=detector,
        model_fc1=SKAB_A_DETECTORS["model"]["fc1"],
        false_alarm_rate=SKAB_A_DETECTORS[detector]["false_alarm_rate"],
        promised_false_alarm_rate=0.01,
        promise_tolerance=tolerance,
        detectors=SKAB_A_DETECTORS,
    )
