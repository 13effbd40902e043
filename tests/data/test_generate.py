from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from container_component_src.data.generate import (
    ANOMALY_KINDS,
    GeneratorOptions,
    channel_specs,
    format_doy,
    format_duration,
    run_generate_data,
)
from container_component_src.data.labels import parse_reports, read_reports
from tests.conftest import TINY


def test_archive_format(tiny_data: dict[str, str]) -> None:
    archive = pq.ParquetFile(Path(tiny_data["archives"]) / "eclss_2021.parquet")
    schema = archive.schema_arrow
    assert schema.field("normalizedTime").type.tz == "UTC"
    assert all(str(f.type) == "float" for f in schema if f.name != "normalizedTime")
    assert len(schema) == TINY.n_channels + 1
    assert archive.metadata.num_row_groups > 1
    frame = archive.read().to_pandas()
    times = frame["normalizedTime"]
    assert times.is_monotonic_increasing
    steps = times.diff().dt.total_seconds().dropna()
    assert steps.std() > 0.5, "sampling must be irregular"
    assert frame.drop(columns="normalizedTime").isna().to_numpy().any(), "sensor gaps expected"
    assert times.min() >= pd.Timestamp("2021-01-01", tz="UTC")
    assert times.max() < pd.Timestamp("2021-01-01", tz="UTC") + pd.Timedelta(days=TINY.days_per_year)


def test_reports_match_ground_truth(tiny_data: dict[str, str]) -> None:
    raw = read_reports(tiny_data["reports"])
    assert list(raw.columns) == ["ID", "SYMBOL", "TITLE", "EVENT GMT (DOY/HH:MM:SS)", "Duration/End GMT"]
    intervals = parse_reports(raw, tiny_data["reports"], "ID", "EVENT GMT (DOY/HH:MM:SS)", "Duration/End GMT")
    truth = pd.read_parquet(tiny_data["truth"]).sort_values("start", ignore_index=True)
    assert len(truth) == len(intervals) >= 1
    # Reports are rounded outwards to whole seconds, so each covers its exact interval.
    assert (intervals["start"] <= truth["start"]).all()
    assert (intervals["end"] >= truth["end"]).all()
    assert ((intervals["end"] - truth["end"]) < pd.Timedelta(seconds=1)).all()


def test_same_seed_same_files(tmp_path: Path) -> None:
    options = GeneratorOptions(years=(2020,), days_per_year=1, sampling_period_s=60.0, n_channels=3, seed=11)
    for name in ("a", "b"):
        run_generate_data(str(tmp_path / name), str(tmp_path / f"{name}.csv"), str(tmp_path / f"{name}.pq"), options)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "eclss_2020.parquet"), pd.read_parquet(tmp_path / "b" / "eclss_2020.parquet")
    )
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_anomalies_change_the_signal(tmp_path: Path) -> None:
    options = GeneratorOptions(
        years=(2021,), days_per_year=20, sampling_period_s=60.0, n_channels=16, seed=5, anomalies_per_day=0.6
    )
    run_generate_data(str(tmp_path / "a"), str(tmp_path / "r.xlsx"), str(tmp_path / "t.parquet"), options)
    truth = pd.read_parquet(tmp_path / "t.parquet")
    assert set(truth["kind"]) <= set(ANOMALY_KINDS) and truth["kind"].nunique() >= 4
    frame = pd.read_parquet(tmp_path / "a" / "eclss_2021.parquet").set_index("normalizedTime")
    shifts = truth[truth["kind"].isin(["level_shift", "spike"])]
    for row in shifts.itertuples():
        inside = frame.loc[row.start : row.end, row.channel].median()
        before = frame.loc[row.start - pd.Timedelta(hours=2) : row.start, row.channel]
        assert abs(inside - before.median()) > 3 * before.std(), row


def test_channel_count_beyond_the_base_set() -> None:
    specs = channel_specs(40)
    assert len({s.name for s in specs}) == 40
    assert specs[16].name.endswith("_2")


def test_doy_and_duration_formats() -> None:
    assert format_doy(pd.Timestamp("2021-02-14 13:22:05", tz="UTC")) == "2021/045/13:22:05"
    assert format_duration(26 * 3600 + 61.2) == "26:01:02"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"years": ()}, "--years"),
        ({"days_per_year": 0}, "--days-per-year"),
        ({"sampling_period_s": 0.0}, "--sampling-period-s"),
        ({"n_channels": 0}, "--n-channels"),
    ],
)
def test_bad_options_name_the_option(tmp_path: Path, change: dict, message: str) -> None:
    options = GeneratorOptions(**{**GeneratorOptions().__dict__, **change})
    with pytest.raises(ValueError, match=message):
        run_generate_data(str(tmp_path), str(tmp_path / "r.xlsx"), str(tmp_path / "t.pq"), options)
    assert not any(tmp_path.iterdir())


def test_reports_extension_is_checked(tmp_path: Path) -> None:
    options = GeneratorOptions(years=(2021,), days_per_year=1, sampling_period_s=600.0, n_channels=2)
    with pytest.raises(ValueError, match=r"must end in \.xlsx or \.csv"):
        run_generate_data(str(tmp_path / "a"), str(tmp_path / "r.txt"), str(tmp_path / "t.pq"), options)


def test_an_interrupted_generation_leaves_no_partial_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed while writing the reports (the last step): no archive without its reports appears."""
    from container_component_src.data import generate

    options = GeneratorOptions(years=(2021,), days_per_year=1, sampling_period_s=600.0, n_channels=2)

    def interrupted(reports: object, url: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "write_reports", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_generate_data(str(tmp_path / "archives"), str(tmp_path / "r.xlsx"), str(tmp_path / "t.pq"), options)
    assert not (tmp_path / "archives").exists() and not (tmp_path / "r.xlsx").exists()
    assert not list(tmp_path.glob("archives.tmp-*")), "the staging folder is removed"


def test_generation_replaces_an_earlier_data_set_whole(tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    (archives).mkdir()
    (archives / "eclss_1999.parquet").write_bytes(b"old")
    (tmp_path / "archives.tmp-0123abcd").mkdir()  # left by a killed run
    options = GeneratorOptions(years=(2021,), days_per_year=1, sampling_period_s=600.0, n_channels=2)
    run_generate_data(str(archives), str(tmp_path / "r.xlsx"), str(tmp_path / "t.pq"), options)
    assert sorted(p.name for p in archives.iterdir()) == ["eclss_2021.parquet"]
    assert not (tmp_path / "archives.tmp-0123abcd").exists()


def test_reports_inside_the_archive_folder_are_refused(tmp_path: Path) -> None:
    options = GeneratorOptions(years=(2021,), days_per_year=1, sampling_period_s=600.0, n_channels=2)
    with pytest.raises(ValueError, match="--reports .* must not be inside --archives"):
        run_generate_data(str(tmp_path), str(tmp_path / "r.xlsx"), str(tmp_path / "t.pq"), options)
