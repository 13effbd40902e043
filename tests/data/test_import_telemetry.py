import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src.data.import_telemetry import ImportOptions, run_import_telemetry
from container_component_src.data.labels import label_rows, read_reports, to_ns
from container_component_src.data.labels import parse_reports as parse_report_rows
from container_component_src.data.split import SplitOptions
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

OPTIONS = ImportOptions(timestamp_column="time", label_column="anomaly", separator=";")


def _recording(path: Path, start: str, n: int = 120, anomalies: tuple[slice, ...] = (slice(30, 40),)) -> pd.DataFrame:
    rng = np.random.default_rng(len(str(path)))
    frame = pd.DataFrame(
        {
            "time": pd.date_range(start, periods=n, freq="1s").strftime("%Y-%m-%d %H:%M:%S"),
            "pressure": rng.normal(size=n).round(4),
            "flow": rng.normal(size=n).round(4),
            "anomaly": 0,
            "changepoint": 0,
        }
    )
    for rows in anomalies:
        frame.loc[rows, "anomaly"] = 1
    frame.to_csv(path, sep=";", index=False)
    return frame


def _intervals(reports_url: str) -> pd.DataFrame:
    from container_component_src.data.generate import REPORT_COLUMNS

    return parse_report_rows(read_reports(reports_url), reports_url, *REPORT_COLUMNS[:1], *REPORT_COLUMNS[3:])


def test_per_row_labels_round_trip_through_the_reports(tmp_path: Path) -> None:
    first = _recording(tmp_path / "a.csv", "2020-03-09 10:00:00", anomalies=(slice(30, 40), slice(100, 119)))
    second = _recording(tmp_path / "b.csv", "2021-01-05 08:00:00")
    options = ImportOptions(**{**OPTIONS.__dict__, "drop_columns": ("changepoint",)})
    counts = run_import_telemetry(
        [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], str(tmp_path / "arch"), str(tmp_path / "r.xlsx"), options
    )
    assert counts == {"files": 2, "rows": 240, "channels": 2, "anomalies": 3, "archives": 2}
    archive = pd.read_parquet(tmp_path / "arch" / "telemetry_2020.parquet")
    assert list(archive.columns) == ["normalizedTime", "pressure", "flow"]
    assert str(archive["normalizedTime"].dt.tz) == "UTC"
    intervals = _intervals(str(tmp_path / "r.xlsx"))
    times = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "arch").glob("*.parquet"))])["normalizedTime"]
    labels = label_rows(to_ns(times), to_ns(intervals["start"]), to_ns(intervals["end"]))
    assert labels.tolist() == pd.concat([first, second])["anomaly"].tolist(), "labels survive the reports exactly"


def test_intervals_file_and_parquet_sources(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"ts": pd.date_range("2022-06-01", periods=50, freq="1min", tz="Europe/Berlin"), "temp": np.arange(50.0)}
    )
    frame.to_parquet(tmp_path / "t.parquet")
    pd.DataFrame({"from": ["2022-06-01 00:10+02:00"], "to": ["2022-06-01 00:20+02:00"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    options = ImportOptions(
        timestamp_column="ts",
        intervals=str(tmp_path / "labels.csv"),
        interval_start_column="from",
        interval_end_column="to",
    )
    run_import_telemetry([str(tmp_path / "t.parquet")], str(tmp_path / "arch"), str(tmp_path / "r.csv"), options)
    (interval,) = _intervals(str(tmp_path / "r.csv")).itertuples()
    assert interval.start == pd.Timestamp("2022-05-31 22:10", tz="UTC")
    assert interval.end == pd.Timestamp("2022-05-31 22:20", tz="UTC")


def test_stack_lays_overlapping_recordings_end_to_end(tmp_path: Path) -> None:
    _recording(tmp_path / "a.csv", "2020-03-09 10:00:00")
    _recording(tmp_path / "b.csv", "2020-03-09 10:01:00")  # overlaps a.csv by a minute
    sources = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    options = ImportOptions(**{**OPTIONS.__dict__, "drop_columns": ("changepoint",)})
    with pytest.raises(InputError, match="times overlap .* import them with --stack"):
        run_import_telemetry(sources, str(tmp_path / "arch"), str(tmp_path / "r.csv"), options)
    stacked = ImportOptions(**{**options.__dict__, "stack": True, "stack_gap": "10min"})
    run_import_telemetry(sources, str(tmp_path / "arch"), str(tmp_path / "r.csv"), stacked)
    times = pd.read_parquet(tmp_path / "arch" / "telemetry_2020.parquet")["normalizedTime"]
    assert times.iloc[120] - times.iloc[119] == pd.Timedelta("10min") and times.is_monotonic_increasing
    intervals = _intervals(str(tmp_path / "r.csv"))
    assert intervals["start"].tolist() == [times.iloc[30], times.iloc[150]]


def test_test_sources_give_the_test_periods_of_the_split(tmp_path: Path) -> None:
    _recording(tmp_path / "normal.csv", "2020-03-09 10:00:00")
    _recording(tmp_path / "fault.csv", "2020-03-09 10:01:00")
    sources = [str(tmp_path / "normal.csv"), str(tmp_path / "fault.csv")]
    options = ImportOptions(
        **{**OPTIONS.__dict__, "drop_columns": ("changepoint",), "stack": True, "test_sources": ("fault*",)}
    )
    result = run_import_telemetry(sources, str(tmp_path / "arch"), str(tmp_path / "r.csv"), options)
    times = pd.read_parquet(tmp_path / "arch" / "telemetry_2020.parquet")["normalizedTime"]
    assert result["test_periods"] == f"{times.iloc[120].isoformat()}/{times.iloc[-1].isoformat()}"
    split = SplitOptions(test_periods=result["test_periods"])
    starts, ends = split.periods()
    assert (starts[0], ends[0]) == (times.iloc[120].value, times.iloc[-1].value), "the split reads what import wrote"
    with pytest.raises(OptionError, match="--test-source 'nothing.csv' matches no --source file"):
        bad = ImportOptions(**{**options.__dict__, "test_sources": ("nothing.csv",), "overwrite": True})
        run_import_telemetry(sources, str(tmp_path / "arch"), str(tmp_path / "r.csv"), bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(time=f["time"].where(f.index != 5, "yesterday")), "column 'time' row 7 value 'yesterday'"),
        (lambda f: f.assign(time=f["time"].where(f.index != 5, f["time"][4])), "1 duplicate timestamp"),
        (lambda f: f.assign(flow=f["flow"].astype(object).where(f.index != 3, "high")), "channel 'flow' row 5"),
        (
            lambda f: f.assign(anomaly=f["anomaly"].where(f.index != 3, 2)),
            "column 'anomaly' row 5 value 2 is not 0 or 1",
        ),
        (lambda f: f.drop(columns="time"), "no column 'time'"),
    ],
)
def test_bad_sources_are_named(tmp_path: Path, edit, message: str) -> None:
    frame = _recording(tmp_path / "a.csv", "2020-03-09 10:00:00").drop(columns="changepoint")
    edit(frame).to_csv(tmp_path / "bad.csv", sep=";", index=False)
    with pytest.raises(InputError, match=message) as error:
        run_import_telemetry([str(tmp_path / "bad.csv")], str(tmp_path / "arch"), str(tmp_path / "r.csv"), OPTIONS)
    assert "bad.csv" in str(error.value)
    assert not (tmp_path / "arch").exists() and not (tmp_path / "r.csv").exists(), "nothing is written"


@pytest.mark.parametrize(
    ("starts", "ends", "message"),
    [
        (["2020-01-01 00:10"], ["2020-01-01 00:05"], "row 2 ends before it starts"),
        (["2020-01-01 00:10", "2020-01-01 00:12"], ["2020-01-01 00:15", "2020-01-01 00:20"], "rows 2 and 3 overlap"),
    ],
)
def test_bad_intervals_are_named(tmp_path: Path, starts: list[str], ends: list[str], message: str) -> None:
    pd.DataFrame({"time": pd.date_range("2020-01-01", periods=60, freq="1min"), "x": 1.0}).to_parquet(
        tmp_path / "t.parquet"
    )
    pd.DataFrame({"start": starts, "end": ends}).to_csv(tmp_path / "labels.csv", index=False)
    options = ImportOptions(timestamp_column="time", intervals=str(tmp_path / "labels.csv"))
    with pytest.raises(InputError, match=f"labels.csv: .*{message}"):
        run_import_telemetry([str(tmp_path / "t.parquet")], str(tmp_path / "arch"), str(tmp_path / "r.csv"), options)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"time;flow\n2020-01-01 00:00;1\x002\n", "bad.csv: line 2 holds a NUL byte"),
        (b"time;flow;flow\n2020-01-01 00:00;1;2\n", "bad.csv: column name 'flow' appears twice \\(columns 2 and 3\\)"),
        (b"time;flow;\n2020-01-01 00:00;1;\n", "bad.csv: column 3 of the header has no name \\(a trailing ';'\\?\\)"),
    ],
)
def test_csv_text_that_would_import_wrong_is_refused(tmp_path: Path, text: bytes, message: str) -> None:
    """A NUL byte would cut `1<NUL>2` to 1; a repeated or empty header would become channels
    `flow.1` or `Unnamed: 2`."""
    for name, data in (("bad.csv", text), ("bad.csv.gz", gzip.compress(text))):
        (tmp_path / name).write_bytes(data)
        options = ImportOptions(timestamp_column="time", separator=";", label_column="anomaly")
        with pytest.raises(InputError, match=message.replace("bad.csv", name.replace(".", "\\."))):
            run_import_telemetry([str(tmp_path / name)], str(tmp_path / "arch"), str(tmp_path / "r.csv"), options)
        assert not (tmp_path / "arch").exists()


@pytest.mark.parametrize("gap", ["-1h", "0s", "abc", "1 fortnight", "1M", "200000 days"])
def test_a_stack_gap_that_is_not_a_positive_span_is_refused(gap: str) -> None:
    with pytest.raises(OptionError, match="--stack-gap"):
        ImportOptions(stack=True, label_column="anomaly", stack_gap=gap).validate()


def test_reports_on_every_sheet_of_a_workbook_are_read(tmp_path: Path, capsys) -> None:
    columns = ["ID", "EVENT GMT (DOY/HH:MM:SS)", "Duration/End GMT"]
    with pd.ExcelWriter(tmp_path / "r.xlsx") as writer:
        for sheet, report in (("2021", "A"), ("2022", "B")):
            row = [report, f"{sheet}/001/02:00:00", "00:10:00"]
            pd.DataFrame([row], columns=columns).to_excel(writer, sheet_name=sheet, index=False)
        pd.DataFrame({"note": ["made by hand"]}).to_excel(writer, sheet_name="notes", index=False)
    assert list(read_reports(str(tmp_path / "r.xlsx"))["ID"]) == ["A", "B"]
    assert "sheet 'notes' of" in capsys.readouterr().out


def test_conflicting_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        run_import_telemetry([], "a", "r.csv", ImportOptions(label_column="y", intervals="i.csv"))


def test_import_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from container_component_src.main import app

    _recording(tmp_path / "a.csv", "2020-03-09 10:00:00")
    args = ["import-telemetry", "--source", str(tmp_path / "a.csv"), "--timestamp-column", "time"]
    args += ["--label-column", "anomaly", "--separator", ";", "--drop-column", "changepoint"]
    args += ["--archives", str(tmp_path / "arch"), "--reports", str(tmp_path / "r.xlsx")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert '"anomalies": 1' in result.output
    bad = CliRunner().invoke(
        app, [*args[:-4], "--archives", str(tmp_path / "x"), "--reports", str(tmp_path / "r.csv"), "--separator", ","]
    )
    assert bad.exit_code == 1 and "Error: " in bad.output and "no column 'time'" in bad.output


def test_next_command_names_the_data_root_and_what_differs_from_config() -> None:
    from container_component_src.config import load_settings
    from container_component_src.data.import_telemetry import RUN_COMMAND, next_command

    data = load_settings().data
    plain = next_command(
        "own/pump 2/archives", "own/pump 2/anomaly_reports.xlsx", "normalizedTime", data, "normalizedTime"
    )
    assert plain == f"ECLSS_DATA__ROOT='own/pump 2' ECLSS_DATA__DATASET='pump 2' {RUN_COMMAND}"
    other = next_command("s3://b/x/arch/", "/elsewhere/r.csv", "t", data, "normalizedTime", "2021-01-01/2021-01-02")
    assert other == (
        "ECLSS_DATA__ROOT=s3://b/x ECLSS_DATA__DATASET=x ECLSS_DATA__ARCHIVES=arch ECLSS_COLUMNS__TIMESTAMP=t "
        f"{RUN_COMMAND} --param reports=/elsewhere/r.csv --param test_periods=2021-01-01/2021-01-02"
    )
    inside = next_command("archives", "reports/r.csv", "normalizedTime", data, "normalizedTime")
    assert inside.startswith("ECLSS_DATA__ROOT=. ECLSS_DATA__DATASET=archives ECLSS_DATA__REPORTS=reports/r.csv ")


def test_import_prints_the_next_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from container_component_src.main import app

    (tmp_path / "t.csv").write_text("time,x\n2021-03-01 00:00:00,1.0\n2021-03-01 00:00:10,2.0\n")
    root = tmp_path / "pump"
    args = ["import-telemetry", "--source", str(tmp_path / "t.csv"), "--archives", str(root / "archives")]
    args += ["--reports", str(root / "anomaly_reports.xlsx"), "--timestamp-column", "time"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    command = lines[lines.index("Next, run the pipeline on it (it serves its own model from its data root):") + 1]
    assert command == f"ECLSS_DATA__ROOT={root} ECLSS_DATA__DATASET=pump {RUN_COMMAND_TEXT}"


RUN_COMMAND_TEXT = "poetry run python pipeline/compile_and_run_pipeline.py --local"


def test_each_data_root_serves_its_own_model() -> None:
    import dataclasses

    from container_component_src.config import load_settings
    from container_component_src.main import cli_defaults

    settings = load_settings()
    own = dataclasses.replace(settings, data=dataclasses.replace(settings.data, root="elsewhere/pump"))
    assert cli_defaults(settings)["deploy"]["local_model_dir"] == "local_data/served_model"
    assert cli_defaults(own)["deploy"]["local_model_dir"] == "elsewhere/pump/served_model"
    remote = dataclasses.replace(settings, data=dataclasses.replace(settings.data, root="s3://b/x", dataset="My Pump"))
    assert cli_defaults(remote)["deploy"]["local_model_dir"] == "local_data/my-pump/served_model"
