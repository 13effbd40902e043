from pathlib import Path

import pytest

from container_component_src.config import ConfigError, load_settings


def test_project_config_loads(project_root: Path) -> None:
    settings = load_settings(project_root / "config.toml", environ={})
    assert settings.columns.timestamp == "normalizedTime"
    assert settings.data.archives_url == "local_data/archives"
    assert settings.generator.years and all(isinstance(y, int) for y in settings.generator.years)


def test_environment_overrides_with_types(project_root: Path) -> None:
    env = {
        "ECLSS_DATA__ROOT": "s3://bucket/eclss",
        "ECLSS_GENERATOR__YEARS": "[2019, 2020]",
        "ECLSS_PREPROCESSING__N_WORKERS": "8",
        "ECLSS_SPLIT__VAL_SHARE": "0.3",
        "ECLSS_PLATFORM__NAMESPACE": "team-a",
    }
    settings = load_settings(project_root / "config.toml", environ=env)
    assert settings.data.archives_url == "s3://bucket/eclss/archives"
    assert settings.generator.years == [2019, 2020]
    assert settings.preprocessing.n_workers == 8
    assert settings.split.val_share == 0.3
    assert settings.platform.namespace == "team-a"


def test_bad_override_names_the_variable(project_root: Path) -> None:
    with pytest.raises(ConfigError, match="ECLSS_PREPROCESSING__N_WORKERS='many'"):
        load_settings(project_root / "config.toml", environ={"ECLSS_PREPROCESSING__N_WORKERS": "many"})
    with pytest.raises(ConfigError, match="ECLSS_SPLIT__VAL_SHARE: expected float"):
        load_settings(project_root / "config.toml", environ={"ECLSS_SPLIT__VAL_SHARE": '"x"'})


def test_missing_and_unknown_keys(tmp_path: Path, project_root: Path) -> None:
    text = (project_root / "config.toml").read_text()
    (tmp_path / "missing.toml").write_text(text.replace('kind = "standard"', ""))
    with pytest.raises(ConfigError, match=r"missing key 'kind' in \[scaling\]"):
        load_settings(tmp_path / "missing.toml", environ={})
    (tmp_path / "unknown.toml").write_text(text.replace('kind = "standard"', 'kind = "standard"\nknd = 1'))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[scaling\]: knd"):
        load_settings(tmp_path / "unknown.toml", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_dotenv_is_read_but_never_wins(tmp_path: Path, project_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ECLSS_PLATFORM__NAMESPACE=from-dotenv\nECLSS_SCALING__KIND=minmax\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ECLSS_SCALING__KIND", "standard")
    monkeypatch.delenv("ECLSS_PLATFORM__NAMESPACE", raising=False)
    settings = load_settings(project_root / "config.toml")
    assert settings.platform.namespace == "from-dotenv"
    assert settings.scaling.kind == "standard"
