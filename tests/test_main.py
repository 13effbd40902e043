import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from container_component_src.main import app, run_subcommand

runner = CliRunner()
COMMANDS = [
    "generate-data",
    "list-archives",
    "split-archive",
    "preprocess",
    "parse-reports",
    "label-series",
    "split-dataset",
    "fit-scaler",
    "apply-scaler",
    "tune",
    "train",
    "evaluate",
    "deploy",
    "serve",
    "import-telemetry",
]


def test_help_lists_every_step() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_config_defaults(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--" in result.output
    assert "<bool>" not in result.output, "a flag's type is its name"


def test_options_from_config_are_not_marked_required() -> None:
    result = runner.invoke(app, ["preprocess", "--help"], terminal_width=200)
    rows = {
        next(word for word in line.split() if word.startswith("--")): line
        for line in result.output.splitlines()
        if line.startswith(("│ *  --", "│    --"))
    }
    assert not rows["--resample-period"].startswith("│ *") and "[default: 1min]" in result.output
    assert rows["--out"].startswith("│ *"), "an option with no default stays required"


def test_data_steps_through_the_cli(tmp_path: Path) -> None:
    """The whole data half, one subcommand at a time, as the KFP tasks run them."""
    d = tmp_path
    generate = [
        "generate-data",
        "--archives",
        f"{d}/archives",
        "--reports",
        f"{d}/reports.xlsx",
        "--ground-truth",
        f"{d}/truth.parquet",
        "--years",
        "2021",
        "--days-per-year",
        "4",
        "--sampling-period-s",
        "60",
        "--n-channels",
        "5",
        "--anomalies-per-day",
        "1",
    ]
    result = runner.invoke(app, generate)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["archives"] == 1
    steps = [
        ["list-archives", "--archives", f"{d}/archives", "--out", f"{d}/listing.json"],
        ["split-archive", "--archive", f"{d}/archives/eclss_2021.parquet", "--out", f"{d}/parts"],
        [
            "preprocess",
            "--partitions",
            f"{d}/parts",
            "--out",
            f"{d}/telemetry",
            "--quality-report",
            f"{d}/q.json",
            "--n-workers",
            "1",
        ],
        ["parse-reports", "--reports", f"{d}/reports.xlsx", "--out", f"{d}/intervals.parquet"],
        [
            "label-series",
            "--telemetry",
            f"{d}/telemetry",
            "--intervals",
            f"{d}/intervals.parquet",
            "--out",
            f"{d}/l.parquet",
        ],
        [
            "split-dataset",
            "--labelled",
            f"{d}/l.parquet",
            "--intervals",
            f"{d}/intervals.parquet",
            "--train",
            f"{d}/train.parquet",
            "--val",
            f"{d}/val.parquet",
            "--test",
            f"{d}/test.parquet",
            "--block-hours",
            "6",
        ],
        ["fit-scaler", "--train", f"{d}/train.parquet", "--out", f"{d}/scaler.json"],
        [
            "apply-scaler",
            "--scaler",
            f"{d}/scaler.json",
            "--train",
            f"{d}/train.parquet",
            "--val",
            f"{d}/val.parquet",
            "--test",
            f"{d}/test.parquet",
            "--train-out",
            f"{d}/s_train.parquet",
            "--val-out",
            f"{d}/s_val.parquet",
            "--test-out",
            f"{d}/s_test.parquet",
        ],
    ]
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, f"{step[0]}: {result.output}"
    tune = [
        "tune",
        "--train",
        f"{d}/s_train.parquet",
        "--val",
        f"{d}/s_val.parquet",
        "--scaler",
        f"{d}/scaler.json",
        "--out",
        f"{d}/best.json",
        "--max-trials",
        "1",
        "--epochs-per-trial",
        "1",
        "--accelerator",
        "cpu",
        "--search-space",
        '{"beta": {"type": "double", "min": 0.5, "max": 1.0}}',
    ]
    # An operator's rule: the first channel left out of the score, in tuning and training alike.
    first = json.loads((Path(d) / "scaler.json").read_text())["channels"][0]
    result = runner.invoke(app, [*tune, "--named-weights", f"{first[:-1]}=0"])
    assert (
        result.exit_code == 1
        and "--named-weights names" in result.output
        and f"did you mean {first!r}" in result.output
    )
    result = runner.invoke(app, [*tune, "--named-weights", f"{first}=0"])
    assert result.exit_code == 0, result.output
    train = [
        "train",
        "--train",
        f"{d}/s_train.parquet",
        "--val",
        f"{d}/s_val.parquet",
        "--scaler",
        f"{d}/scaler.json",
        "--out",
        f"{d}/model",
        "--params",
        f"{d}/best.json",
        "--max-epochs",
        "1",
        "--accelerator",
        "cpu",
    ]
    result = runner.invoke(app, [*train, "--named-weights", f"{first}=0"])
    assert result.exit_code == 0, result.output
    from container_component_src.model.io import load_scripted

    model, _ = load_scripted(f"{d}/model")
    assert model.channel_weight[0] == 0 and (model.channel_weight[1:] > 0).all()
    assert model.input_high[0] < float("inf") and model.input_high[1:].isinf().all(), "only the left-out one is bounded"
    assert (
        json.loads((Path(d) / "model" / "hparams.json").read_text())["beta"]
        == json.loads((Path(d) / "best.json").read_text())["parameters"]["beta"]
    )
    evaluate = ["evaluate", "--model", f"{d}/model", "--val", f"{d}/s_val.parquet", "--test", f"{d}/s_test.parquet"]
    evaluate += ["--results", f"{d}/results.parquet", "--summary", f"{d}/summary.json", "--report", f"{d}/report.html"]
    result = runner.invoke(app, evaluate)
    assert result.exit_code == 0, result.output
    summary = json.loads((Path(d) / "summary.json").read_text())
    assert json.loads(result.stdout)["deploy"]["fc1"] == summary["deploy"]["fc1"]
    scaled = pd.read_parquet(f"{d}/s_train.parquet")
    assert abs(scaled.drop(columns="label").mean()).max() < 1e-3
    assert pd.read_parquet(f"{d}/s_test.parquet")["label"].sum() > 0


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["split-archive", "--archive", f"{tmp_path}/nope.parquet", "--out", f"{tmp_path}/o"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: archive {tmp_path}/nope.parquet does not exist"]


def test_bad_option_value_is_rejected() -> None:
    result = runner.invoke(app, ["fit-scaler", "--train", "t", "--out", "o", "--kind", "zscore"])
    assert result.exit_code == 2 and "zscore" in result.output


def test_fit_scaler_keeps_reference_rows_and_refuses_a_negative_count(tmp_path: Path) -> None:
    times = pd.date_range("2021-01-01", periods=4, freq="1min", tz="UTC")
    pd.DataFrame({"x": [1.0, 3.0, 5.0, 7.0], "label": 0}, index=times).to_parquet(tmp_path / "t.parquet")
    args = ["fit-scaler", "--train", f"{tmp_path}/t.parquet", "--out", f"{tmp_path}/s.json", "--reference-rows"]
    assert runner.invoke(app, [*args, "2"]).exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text())["reference_rows"] == 2
    result = runner.invoke(app, [*args, "-3"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --reference-rows must be 0 (off) or more, got -3"


def test_bad_config_is_reported(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--config", f"{tmp_path}/none.toml", "list-archives"])
    assert result.exit_code != 0


def test_bad_search_space_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["tune", "--train", "t", "--val", "v", "--scaler", "s", "--out", "o", "--search-space", '{"dropout": {}}']
    )
    assert result.exit_code == 1
    assert "Error: --search-space: unknown parameter 'dropout'" in result.output


def test_run_subcommand_exits_non_zero(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run_subcommand("list-archives", "--archives", str(tmp_path))
    assert exc.value.code == 1


@pytest.mark.parametrize(
    ("env", "flag", "expected"), [(None, [], False), ("true", [], True), ("true", ["--no-profile-workers"], False)]
)
def test_worker_profiler_follows_config_env_and_flag(
    monkeypatch: pytest.MonkeyPatch, env: str | None, flag: list[str], expected: bool
) -> None:
    from container_component_src.cluster import dask as dask_cluster

    if env is not None:
        monkeypatch.setenv("ECLSS_PREPROCESSING__PROFILE_WORKERS", env)
    seen: dict[str, bool] = {}

    def no_cluster(options: dask_cluster.ClusterOptions, api_client: object = None) -> None:
        seen["profile"] = options.profile_workers
        raise RuntimeError("no cluster in this test")

    monkeypatch.setattr(dask_cluster, "dask_client", no_cluster)
    command = ["label-series", "--telemetry", "t", "--intervals", "i", "--out", "o", "--cluster", "kubernetes"]
    result = runner.invoke(app, [*command, *flag])
    assert result.exit_code != 0 and seen == {"profile": expected}


@pytest.mark.parametrize("width", [120, 160])  # help is never narrower than 120 (widen_help)
def test_help_layout_has_no_defects(width: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """No `<bool>` on flags, no option name cut short, no list of choices folded mid-word."""
    from typer import rich_utils

    from container_component_src.main import cli

    monkeypatch.setenv("TERMINAL_WIDTH", str(width))
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", width)
    pages = []
    for args in [["--help"], *([name, "--help"] for name in COMMANDS)]:
        monkeypatch.setattr("sys.argv", ["main", *args])
        with pytest.raises(SystemExit):
            cli()
        pages.append(capsys.readouterr().out)
    for page in pages:
        assert "<bool>" not in page and "…" not in page, page
        assert not any("_" in word for word in page.split() if word.startswith("--")), "KServe's spellings are hidden"
    serve = pages[1 + COMMANDS.index("serve")]
    assert "One of: combined, predictor, transformer." in " ".join(serve.replace("│", " ").split())


def test_kserve_spellings_are_read_as_ours() -> None:
    from container_component_src.main import kserve_argv

    argv = ["serve", "--model_name", "m", "--http_port=8080", "--predictor_host", "h:1", "--max-batch-rows", "5"]
    assert kserve_argv(argv) == [
        "serve",
        "--name",
        "m",
        "--http-port=8080",
        "--predictor-host",
        "h:1",
        "--max-batch-rows",
        "5",
    ]
