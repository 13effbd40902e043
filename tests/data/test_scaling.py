from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src.data.scaling import (
    apply_scaler,
    describe_channels,
    drift_shares,
    fit_scaler,
    mode_channels_of,
    run_apply_scaler,
    run_fit_scaler,
)
from container_component_src.errors import OptionError
from container_component_src.storage import InputError
from tests.dataset_files import write_dataset


def _frame(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        values, index=pd.date_range("2021-01-01", periods=len(next(iter(values.values()))), freq="1min", tz="UTC")
    )


def test_standard_and_minmax() -> None:
    frame = _frame({"a": [1.0, 2.0, 3.0], "b": [10.0, 10.0, 10.0]})
    standard = apply_scaler(frame, fit_scaler(frame, ["a", "b"], "standard"), "f")
    np.testing.assert_allclose(standard["a"], [-1.2247449, 0, 1.2247449], rtol=1e-6)
    np.testing.assert_allclose(standard["b"], [0, 0, 0])
    minmax = apply_scaler(frame, fit_scaler(frame, ["a", "b"], "minmax"), "f")
    np.testing.assert_allclose(minmax["a"], [0, 0.5, 1])
    assert fit_scaler(frame, ["a", "b"])["constant_channels"] == ["b"]
    with pytest.raises(ValueError, match="--kind"):
        fit_scaler(frame, ["a"], "zscore")


def test_robust_scaling_ignores_outliers() -> None:
    values = [float(v) for v in range(1, 101)]
    values[-1] = 1e6
    scaler = fit_scaler(_frame({"a": values}), ["a"], "robust")
    assert scaler["center"] == [pytest.approx(50.5)]
    assert scaler["scale"] == [pytest.approx((75.25 - 25.75) / 1.349)]


def test_scale_floored_at_the_resolution_and_channels_listed_by_kind() -> None:
    rng = np.random.default_rng(0)
    frame = _frame(
        {
            "value": rng.normal(size=1000).tolist(),
            "mode": [0.0] * 995 + [1.0] * 5,
            "steps": (np.arange(1000) % 7).astype(float).tolist(),
            "flat": [3.0] * 1000,
        }
    )
    channels = ["value", "mode", "steps", "flat"]
    scaler = fit_scaler(frame, channels, "robust")
    assert scaler["channel_kinds"] == {"value": "continuous", "mode": "mode", "steps": "continuous", "flat": "constant"}
    # The mode channel's interquartile range is 0: its scale is its step, so a switch scales to 1.
    assert scaler["scale"][1] == 1.0 and scaler["floored_channels"] == ["mode"]
    assert scaler["scale"][3] == 1.0 and scaler["constant_channels"] == ["flat"]
    switched = apply_scaler(_frame({c: [frame[c].iloc[0] + 1.0] for c in channels}), scaler, "f")
    assert switched["mode"].iloc[0] == 1.0
    lines = describe_channels(scaler)
    assert any(line.startswith("mode: mode channel, 2 distinct values") for line in lines)
    assert any(line.startswith("flat: constant in training") for line in lines)
    assert any(line.startswith("mode: scale floored") for line in lines)
    # The same rule on bare rows (a caller training without a scaler), scaled or not.
    values = frame[channels].to_numpy()
    assert mode_channels_of(values) == mode_channels_of((values - 3.0) / 2.0) == (1, 3)
    assert mode_channels_of(values[:, :0]) == ()


def test_fitted_on_train_only_labels_untouched(tmp_path: Path, dask_tasks: object) -> None:
    train = _frame({"a": [0.0, 2.0], "label": [0, 0]})
    test = _frame({"a": [100.0, 2.0], "label": [1, 0]})
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    scaler = run_fit_scaler(str(tmp_path / "train.parquet"), str(tmp_path / "s.json"))
    assert scaler["channels"] == ["a"] and scaler["center"] == [1.0]
    pairs = [(str(tmp_path / "test.parquet"), str(tmp_path / "out.parquet"))]
    run_apply_scaler(str(tmp_path / "s.json"), pairs, dask_tasks)
    out = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(out["a"], [99.0, 1.0])
    assert list(out["label"]) == [1, 0]


def test_missing_channel_is_named() -> None:
    scaler = fit_scaler(_frame({"a": [1.0, 2.0], "b": [1.0, 3.0]}), ["a", "b"])
    with pytest.raises(InputError, match="val.parquet lacks channel\\(s\\) the scaler was fitted on: b"):
        apply_scaler(_frame({"a": [1.0]}), scaler, "val.parquet")


def test_empty_train(tmp_path: Path) -> None:
    _frame({"a": [1.0]}).iloc[:0].to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="t.parquet holds no rows"):
        run_fit_scaler(str(tmp_path / "t.parquet"), str(tmp_path / "s.json"))


def _two_runs() -> pd.DataFrame:
    """Two gapless runs a day apart, at different levels: a at 10 then 20, b at -1 then 5."""
    times = pd.date_range("2021-01-01", periods=6, freq="1min", tz="UTC")
    times = times.append(pd.date_range("2021-01-02", periods=3, freq="1min", tz="UTC"))
    return pd.DataFrame(
        {"a": [10.0, 12.0, 11.0, 13.0, 14.0, 9.0, 20.0, 22.0, 30.0], "b": [-1.0, -1.0, -1.0, 0, 0, 0, 5.0, 5.0, 5.0]},
        index=times,
    )


def test_each_run_is_scaled_relative_to_its_first_rows() -> None:
    frame = _two_runs()
    scaler = fit_scaler(frame, ["a", "b"], "standard", reference_rows=4)
    assert scaler["reference_rows"] == 4
    assert describe_channels(scaler)[0].startswith("all channels: each run relative to the mean of its first 4 rows")
    scaled = apply_scaler(frame, scaler, "f")
    scale = np.asarray(scaler["scale"])
    # Run one's reference: the mean of its first 4 rows; run two (3 rows) takes all of its rows.
    np.testing.assert_allclose(scaled.iloc[:6], (frame.iloc[:6] - [11.5, -0.75]) / scale, rtol=1e-6)
    np.testing.assert_allclose(scaled.iloc[6:], (frame.iloc[6:] - [24.0, 5.0]) / scale, rtol=1e-6)
    assert apply_scaler(frame.iloc[:0], scaler, "f").empty
    # Without references the same rows keep the training center.
    plain = apply_scaler(frame, fit_scaler(frame, ["a", "b"]), "f")
    np.testing.assert_allclose(plain, (frame - np.asarray(scaler["center"])) / scale, rtol=1e-6)


def test_references_need_time_and_a_count_of_zero_or_more() -> None:
    frame = _two_runs()
    with pytest.raises(OptionError, match="--reference-rows must be 0 .off. or more, got -1"):
        fit_scaler(frame, ["a", "b"], reference_rows=-1)
    scaler = fit_scaler(frame, ["a", "b"], reference_rows=2)
    with pytest.raises(InputError, match="val.parquet is not indexed by time"):
        apply_scaler(frame.reset_index(drop=True), scaler, "val.parquet")


def test_a_channel_whose_level_wanders_through_training_is_named_drifting() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(800.0)
    channels = ["warming", "noise", "cycle", "switched", "settled"]
    frame = _frame(
        {
            "warming": (20.0 + t / 100.0 + 0.1 * rng.normal(size=t.size)).tolist(),  # a run warming up
            "noise": rng.normal(size=t.size).tolist(),
            "cycle": (np.sin(t / 5.0) + 0.1 * rng.normal(size=t.size)).tolist(),  # many cycles about one center
            "switched": [0.0] * 400 + [1.0] * 400,  # a mode: its kind says how it weighs, not its drift
            # A start-up transient, then one level to the end: an operating point, not a drift.
            "settled": (np.where(t < 150, 5.0, 0.0) + 0.1 * rng.normal(size=t.size)).tolist(),
        }
    )
    scaler = fit_scaler(frame, channels)
    assert list(scaler["drifting_channels"]) == ["warming"] and scaler["drifting_channels"]["warming"] > 0.9
    assert drift_shares(frame[["settled"]].to_numpy())[0] > 0.5, "over all rows the transient looks like a drift"
    assert scaler["channel_kinds"]["warming"] == "continuous"
    assert "warming: drifts in training (at least 9" in " ".join(describe_channels(scaler))
    shares = drift_shares(frame[channels].to_numpy())
    assert shares[1] < 0.1 and shares[2] < 0.1 and shares[3] == pytest.approx(1.0)
    # Time order is what makes a drift: the same values shuffled do not drift.
    assert drift_shares(rng.permutation(frame[["warming"]].to_numpy()))[0] < 0.1
    assert (drift_shares(frame[channels].to_numpy()[:15]) == 0).all(), "fewer than two rows per block"


def test_runs_at_different_levels_drift_unless_each_is_taken_relative_to_its_first_rows() -> None:
    rng = np.random.default_rng(1)
    times = pd.DatetimeIndex([])
    for day in range(4):
        times = times.append(pd.date_range(f"2021-01-0{day + 1}", periods=400, freq="1min", tz="UTC"))
    frame = pd.DataFrame({"a": rng.normal(size=1600) + np.tile(np.repeat([0.0, 10.0], 400), 2)}, index=times)
    assert list(fit_scaler(frame, ["a"])["drifting_channels"]) == ["a"]
    assert fit_scaler(frame, ["a"], reference_rows=60)["drifting_channels"] == {}


def _gapped(rows: int = 1500) -> pd.DataFrame:
    """Float32 channels on a 10 s grid with gaps (so segments), one mode channel, a label."""
    rng = np.random.default_rng(3)
    times = pd.date_range("2021-01-01", periods=rows * 2, freq="10s", tz="UTC")
    keep = np.ones(rows * 2, dtype=bool)
    for start in (300, 301, 700, 1100, 1900):
        keep[start : start + 40] = False
    times = times[keep][:rows]
    frame = pd.DataFrame(
        {
            "x": (rng.normal(size=rows) * 3 + np.linspace(0, 9, rows)).astype(np.float32),
            "y": rng.standard_t(2, size=rows).astype(np.float32),
            "mode": np.repeat([0.0, 1.0, 0.0], [700, 300, rows - 1000]).astype(np.float32),
            "label": np.zeros(rows, np.int8),
        },
        index=times.rename("normalizedTime"),
    )
    return frame


@pytest.mark.parametrize("kind", ["standard", "robust", "minmax"])
@pytest.mark.parametrize("reference_rows", [0, 25])
def test_streamed_over_many_parts_the_scaler_is_the_one_of_all_rows_at_once(
    tmp_path: Path, kind: str, reference_rows: int, thread_tasks: object
) -> None:
    from container_component_src import datasets

    frame = _gapped()
    write_dataset(str(tmp_path / "train"), frame, part_rows=97)
    streamed = run_fit_scaler(str(tmp_path / "train"), str(tmp_path / "s.json"), kind, reference_rows=reference_rows)
    whole = fit_scaler(frame, ["x", "y", "mode"], kind, reference_rows)
    for key in ("center", "scale"):
        np.testing.assert_allclose(streamed[key], whole[key], rtol=1e-12)
    assert {k: v for k, v in streamed.items() if k not in ("center", "scale")} == {
        k: v for k, v in whole.items() if k not in ("center", "scale")
    }
    values = frame[["x", "y", "mode"]].to_numpy("float64")
    if kind == "robust":  # exact order statistics: the very quantiles numpy computes from all rows
        low, median, high = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
        assert streamed["center"][:2] == median[:2].tolist()
        assert streamed["scale"][:2] == ((high - low) / 1.349)[:2].tolist()
    run_apply_scaler(str(tmp_path / "s.json"), [(str(tmp_path / "train"), str(tmp_path / "out"))], thread_tasks)
    scaled = pd.read_parquet(tmp_path / "out")
    assert len(datasets.parts(str(tmp_path / "out"))) == len(datasets.parts(str(tmp_path / "train")))  # part by part
    pd.testing.assert_frame_equal(scaled, apply_scaler(frame, streamed, "f"), check_freq=False, rtol=1e-6)


def test_exact_quantiles_of_float64_and_of_negative_and_repeated_values() -> None:
    from container_component_src.data.scaling import _quantiles

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=(999, 3)) * [1, 1e-6, 1e6], np.full((500, 3), -2.5)]).astype(np.float64)
    chunks = [pd.DataFrame(values[i : i + 100], columns=["a", "b", "c"]) for i in range(0, len(values), 100)]
    quantiles = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]
    found = _quantiles(lambda: iter(chunks), ["a", "b", "c"], len(values), quantiles, np.float64, False)
    np.testing.assert_array_equal(found, np.quantile(values, quantiles, axis=0))


def test_a_value_that_scales_beyond_float32_is_refused_not_written_as_infinity(
    tmp_path: Path, thread_tasks: object
) -> None:
    train = _frame({"a": [1.0, 1.0 + 1e-6, 1.0], "label": [0, 0, 0]})
    train["a"] = train["a"].astype(np.float32)
    train.to_parquet(tmp_path / "train.parquet")
    scaler = run_fit_scaler(str(tmp_path / "train.parquet"), str(tmp_path / "s.json"), "minmax")
    assert 0 < scaler["scale"][0] < 1e-5
    test = _frame({"a": [1.0, 3e38], "label": [0, 1]})
    test["a"] = test["a"].astype(np.float32)
    test.to_parquet(tmp_path / "test.parquet")
    with pytest.raises(InputError, match=r"test.parquet: channel 'a' value 3e\+38 scales beyond float32 \(1 value"):
        run_apply_scaler(
            str(tmp_path / "s.json"), [(str(tmp_path / "test.parquet"), str(tmp_path / "out"))], thread_tasks
        )
    assert not (tmp_path / "out").exists()


def test_the_scaler_keeps_each_channels_range_as_the_model_sees_it() -> None:
    frame = _two_runs()
    for reference_rows in (0, 4):
        scaler = fit_scaler(frame, ["a", "b"], "standard", reference_rows=reference_rows)
        scaled = apply_scaler(frame, scaler, "f").to_numpy(np.float64)
        np.testing.assert_allclose(scaler["scaled_range"]["low"], scaled.min(axis=0), rtol=1e-6)
        np.testing.assert_allclose(scaler["scaled_range"]["high"], scaled.max(axis=0), rtol=1e-6)
