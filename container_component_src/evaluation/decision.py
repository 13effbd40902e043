"""The contract between evaluation and deployment: what the deploy gate compares and what the
model server flags with, read from the evaluation summary in one typed place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from container_component_src.evaluation.follow import follow_from_dict
from container_component_src.storage import InputError

# The detectors evaluation compares: the trained model, and two classical ones served the same way
# when the gate finds one ahead (`model.residual`): the raw signal given the model's channel
# handling, and the PCA reconstruction error.
MODEL, RAW_SIGNAL, PCA = "model", "raw_signal", "pca"
DETECTOR_LABELS = {MODEL: "the model", RAW_SIGNAL: "raw signal", PCA: "PCA reconstruction error"}


def keeps_promise(false_alarm_rate: float, promised: float, tolerance: float) -> bool:
    """Whether a detector's observed false-alarm rate on the test's normal rows is within
    `tolerance` times what its label-free threshold promised (never with `tolerance` 0)."""
    return tolerance > 0 and false_alarm_rate <= tolerance * promised


# A block of the server's watch on its threshold's promise (`serving.metrics.PromiseWatch`) holds
# enough rows that a threshold keeping its promise flags about this many of them: the count's
# chance spread is then ~10 %, so a block at twice the promise is no accident.
ALARMS_PER_BLOCK = 100


def watch_block_rows(promised: float) -> int:
    """Rows in a block of the server's watch on a threshold that promises to flag `promised` of
    normal rows (evaluation replays the same blocks over the test rows)."""
    return math.ceil(ALARMS_PER_BLOCK / promised)


def gate_choice(
    detectors: dict[str, dict[str, float]], promised: float, tolerance: float, deploy_threshold: float
) -> str:
    """The detector the deploy gate judges and serves.

    Of the detectors whose false alarms keep their threshold's promise within `tolerance` and
    whose Fc1 passes `deploy_threshold`, the one with the highest Fc1; when none does, the highest
    Fc1 of all. The model wins a tie. An operator has no labels: a threshold that raises ten times
    the alarms it promised is one they learn to ignore, so a trusted detector goes before a
    slightly better-scoring one, but never before deploying nothing.

    Args:
        detectors: Name -> {"fc1", "false_alarm_rate"} at the label-free threshold.
        promised: The false-alarm rate the threshold rule promises (the same for every detector).
        tolerance: How many times the promise a detector may raise (0: Fc1 alone decides).
        deploy_threshold: The Fc1 the gate requires.
    """
    return max(detectors, key=lambda name: gate_rank(name, detectors[name], promised, tolerance, deploy_threshold))


def gate_rank(
    name: str, found: dict[str, float], promised: float, tolerance: float, deploy_threshold: float
) -> tuple[bool, float, bool]:
    """The gate's order of a detector (`gate_choice`; higher first): trusted (keeps its promise
    and passes `deploy_threshold`), then Fc1, then the model before a classical detector."""
    trusted = keeps_promise(found["false_alarm_rate"], promised, tolerance) and found["fc1"] > deploy_threshold
    return trusted, found["fc1"], name == MODEL


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
        promise_tolerance: How many times its promise a detector may raise and still be preferred
            (see `gate_choice`; 0: Fc1 alone decided).
        detectors: Every detector compared: name -> {"fc1", "false_alarm_rate"}, and "fc1_at_promise"
            (Fc1 where it would flag the promised share of the test's normal rows, read off their
            labels; absent from summaries written before it).
        follow: The rule and validation figures the served threshold follows each stream's
            scores by (`evaluation.follow`, its `to_dict`); None: it stays as set.
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
    promise_tolerance: float = 0.0
    detectors: dict[str, dict[str, float]] = field(default_factory=dict)
    follow: dict[str, Any] | None = None

    @property
    def fc1_name(self) -> str:
        """What the gate's Fc1 measures, for messages and reports."""
        if self.smoothing_window == 1:
            return "Fc1"
        return f"Fc1 of scores smoothed over {self.smoothing_window} rows (served rows are not smoothed)"

    @property
    def choice(self) -> str:
        """Which detector is served and why, and how its threshold follows each run, in one sentence."""
        rule = self.follow and self.follow.get("rule", "median")
        return self._detector_choice() + (f"; its threshold follows each run ({rule} rule)" if rule else "")

    def _detector_choice(self) -> str:
        label = DETECTOR_LABELS.get(self.detector, self.detector)
        if (best := self.passed_over) is not None:
            other = self.detectors[best]
            return (
                f"{label}{'' if self.detector == MODEL else ', not the model'}: its false alarms keep their "
                f"promise ({self.false_alarm_rate:.2%} of normal rows against {self.promised_false_alarm_rate:.2%} "
                f"promised, within {self.promise_tolerance:g}x) where {DETECTOR_LABELS.get(best, best)}'s higher "
                f"Fc1, {other['fc1']:.3f} against {self.fc1:.3f}, comes with {other['false_alarm_rate']:.2%}"
            )
        if self.detector == MODEL or self.model_fc1 is None:
            sentence = "the model: no classical detector scores a higher Fc1 at the same threshold rule"
        else:
            sentence = (
                f"{label}, not the model: Fc1 {self.fc1:.3f} against the model's {self.model_fc1:.3f} at the same "
                f"threshold rule ({self.fc1 - self.model_fc1:+.3f})"
            )
        if self.promise_tolerance > 0 and self.false_alarm_rate is not None and not self.promise_kept:
            sentence += (
                f"; no detector that keeps its false-alarm promise within {self.promise_tolerance:g}x passes the gate"
            )
        return sentence

    @property
    def passed_over(self) -> str | None:
        """The detector of highest Fc1 when the gate served another for keeping its promise."""
        best = max(self.detectors, key=lambda name: (self.detectors[name]["fc1"], name == MODEL), default=None)
        return None if best == self.detector else best

    @property
    def promise_kept(self) -> bool:
        """Whether the chosen detector's false alarms are within `promise_tolerance` of its promise."""
        if self.false_alarm_rate is None or self.promised_false_alarm_rate is None:
            return False
        return keeps_promise(self.false_alarm_rate, self.promised_false_alarm_rate, self.promise_tolerance)

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
                promise_tolerance=float(block.get("promise_tolerance", 0.0)),
                detectors={
                    str(name): {"fc1": float(found["fc1"]), "false_alarm_rate": float(found["false_alarm_rate"])}
                    | ({"fc1_at_promise": float(found["fc1_at_promise"])} if "fc1_at_promise" in found else {})
                    for name, found in block.get("detectors", {}).items()
                },
                follow=None if block.get("follow") is None else follow_from_dict(block["follow"]).to_dict(),
            )
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise InputError(
                f"{source} has no complete 'deploy' block ({exc!r}): was it written by evaluate?"
            ) from None


def _optional_float(block: dict[str, Any], key: str) -> float | None:
    return None if block.get(key) is None else float(block[key])
