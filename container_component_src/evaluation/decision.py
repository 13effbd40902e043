"""The contract between evaluation and deployment: what the deploy gate compares and what the
model server flags with, read from the evaluation summary in one typed place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from container_component_src.storage import InputError

# The detectors evaluation compares: the trained model, and two classical ones served the same way
# when the gate finds one ahead (`model.residual`): the raw signal given the model's channel
# handling, and the PCA reconstruction error.
MODEL, RAW_SIGNAL, PCA = "model", "raw_signal", "pca"
DETECTOR_LABELS = {MODEL: "the model", RAW_SIGNAL: "raw signal", PCA: "PCA reconstruction error"}


@dataclass(frozen=True)
class DeployDecision:
    """The `deploy` block of an evaluation summary.

    Attributes:
        fc1: Fc1 at the label-free threshold, of the scores as evaluated: per row when
            `smoothing_window` is 1, else of their trailing median over that many rows.
        threshold: The label-free threshold on per-row scores: what the served model flags with
            (served rows are scored one at a time, never smoothed).
        evaluated_threshold: The label-free threshold of the evaluated (possibly smoothed) scores.
        smoothing_window: Rows in the trailing median of the evaluated scores (1: none).
        val_quantile: The quantile of validation scores of the quantile method.
        threshold_method: How both thresholds came from validation scores ("quantile" or "pot").
        detector: Which detector is judged and served: the model, or a classical detector that
            scored a higher Fc1 at the same threshold rule (see `MODEL`, `RAW_SIGNAL`, `PCA`).
        model_fc1: The model's Fc1 at that rule (equal to `fc1` when the model is chosen).
        false_alarm_rate: For the record: the share of the test's normal rows the chosen
            detector flags at its label-free threshold ...
        promised_false_alarm_rate: ... and the share that threshold promises on normal rows like
            the validation rows.
    """

    fc1: float
    threshold: float
    evaluated_threshold: float
    smoothing_window: int
    val_quantile: float
    threshold_method: str = "quantile"
    detector: str = MODEL
    model_fc1: float | None = None
    false_alarm_rate: float | None = None
    promised_false_alarm_rate: float | None = None

    @property
    def fc1_name(self) -> str:
        """What the gate's Fc1 measures, for messages and reports."""
        if self.smoothing_window == 1:
            return "Fc1"
        return f"Fc1 of scores smoothed over {self.smoothing_window} rows (served rows are not smoothed)"

    @property
    def choice(self) -> str:
        """Which detector is served and why, in one sentence."""
        if self.detector == MODEL or self.model_fc1 is None:
            return "the model: no classical detector scores a higher Fc1 at the same threshold rule"
        return (
            f"{DETECTOR_LABELS.get(self.detector, self.detector)}, not the model: Fc1 {self.fc1:.3f} against the "
            f"model's {self.model_fc1:.3f} at the same threshold rule ({self.fc1 - self.model_fc1:+.3f})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fc1_name": self.fc1_name, "choice": self.choice}

    @classmethod
    def from_summary(cls, summary: dict[str, Any], source: str = "the evaluation summary") -> DeployDecision:
        """Read the decision from a summary written by `evaluate`.

        Raises:
            InputError: The summary has no complete deploy block (not written by evaluate).
        """
        block = summary.get("deploy") if isinstance(summary, dict) else None
        try:
            return cls(
                fc1=float(block["fc1"]),
                threshold=float(block["threshold"]),
                evaluated_threshold=float(block["evaluated_threshold"]),
                smoothing_window=int(block["smoothing_window"]),
                val_quantile=float(block["val_quantile"]),
                threshold_method=str(block.get("threshold_method", "quantile")),
                detector=str(block.get("detector", MODEL)),
                model_fc1=_optional_float(block, "model_fc1"),
                false_alarm_rate=_optional_float(block, "false_alarm_rate"),
                promised_false_alarm_rate=_optional_float(block, "promised_false_alarm_rate"),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise InputError(
                f"{source} has no complete 'deploy' block ({exc!r}): was it written by evaluate?"
            ) from None


def _optional_float(block: dict[str, Any], key: str) -> float | None:
    return None if block.get(key) is None else float(block[key])
