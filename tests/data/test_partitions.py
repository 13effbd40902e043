import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from container_component_src.data import partitions as partitions_module
from container_component_src.data.partitions import MANIFEST_NAME, inspect_partitions, read_footers
from container_component_src.data.split_archive import list_archives, run_split_archive
from container_component_src.storage import InputError, crc32c, list_files


@pytest.fixture
def split_folder(tiny_data: dict[str, str], tmp_path: Path) -> Path:
    run_split_archive(list_archives(tiny_data["archives"])[0], str(tmp_path / "parts"))
    return tmp_path / "parts"


def _footers_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a footer was read")

    monkeypatch.setattr(partitions_module, "read_footer", refuse)


def test_the_manifest_describes_what_the_footers_say(split_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_footers = sorted(read_footers(list_files(str(split_folder), ".parquet"), "normalizedTime"), key=str)
    _footers_unread(monkeypatch)
    from_manifest = inspect_partitions([str(split_folder)], "normalizedTime")
    assert len(from_manifest) == 4
    # ... and what no footer says: each file's CRC-32C, taken while split-archive wrote it.
    assert [p.crc32c for p in from_manifest] == [crc32c(Path(p.path).read_bytes()) for p in from_manifest]
    assert sorted((replace(p, crc32c=None) for p in from_manifest), key=str) == from_footers
    assert [p.start_ns for p in from_manifest] == sorted(p.start_ns for p in from_manifest)


def _drop_a_partition(folder: Path) -> None:
    sorted(folder.glob("*.parquet"))[0].unlink()


def _grow_a_partition(folder: Path) -> None:
    with sorted(folder.glob("*.parquet"))[0].open("ab") as handle:
        handle.write(b"\0")


def _add_a_partition(folder: Path) -> None:
    first = sorted(folder.glob("*.parquet"))[0]
    (folder / "part-extra.parquet").write_bytes(first.read_bytes())


def _corrupt(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_text("{not json")


def _other_version(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": 0}))


@pytest.mark.parametrize("change", [_drop_a_partition, _add_a_partition, _corrupt, _other_version])
def test_a_stale_manifest_is_ignored(split_folder: Path, change: object) -> None:
    change(split_folder)  # type: ignore[operator]
    expected = sorted(read_footers(list_files(str(split_folder), ".parquet"), "normalizedTime"), key=str)
    assert sorted(inspect_partitions([str(split_folder)], "normalizedTime"), key=str) == expected


def test_a_changed_file_is_read_from_its_footer(split_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _grow_a_partition(split_folder)
    _footers_unread(monkeypatch)
    with pytest.raises(AssertionError, match="a footer was read"):
        inspect_partitions([str(split_folder)], "normalizedTime")


def test_another_timestamp_column_reads_the_footers(split_folder: Path) -> None:
    with pytest.raises(InputError, match="has no timestamp column 'time'"):
        inspect_partitions([str(split_folder)], "time")


@pytest.mark.parametrize(
    "text",
    [
        "2021-01-01T00:00:00+00:00",
        "2021-03-28T01:30:00.123456789+00:00",
        "1999-12-31T23:59:59.5+02:00",
        "2021-06-01T00:00:00Z",
        "2021-06-01T00:00:00",
    ],
)
def test_partition_times_are_read_to_the_nanosecond(text: str) -> None:
    from container_component_src.data.partitions import _iso_ns, iso_utc

    expected = pd.Timestamp(text)
    expected = (expected if expected.tzinfo else expected.tz_localize("UTC")).value
    assert _iso_ns(text) == expected
    assert _iso_ns(iso_utc(expected)) == expected and pd.Timestamp(iso_utc(expected)).value == expected
