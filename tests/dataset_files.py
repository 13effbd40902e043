"""Writing a frame as a dataset of several parts, as the steps' Dask tasks write them."""

from __future__ import annotations

import pandas as pd

from container_component_src import datasets, storage


def write_dataset(url: str, frame: pd.DataFrame, part_rows: int) -> None:
    """Write `frame` (time-indexed, in time order) to the dataset folder `url`, `part_rows` rows a part."""
    written = []
    for number, start in enumerate(range(0, max(len(frame), 1), part_rows)):
        part = datasets.PartWriter(storage.join(url, f"part-{number:05d}.parquet"))
        part.write(frame.iloc[start : start + part_rows])
        written.append(part.close())
    datasets.write_manifest(url, written)


def tiny_sets(folder: str) -> dict[str, str]:
    """Scaled-looking train and val datasets of a few rows, for launchers that only size them."""
    import numpy as np

    index = pd.date_range("2021-01-01", periods=10, freq="10s", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame(np.zeros((10, 3), np.float32), columns=["a", "b", "c"], index=index)
    urls = {name: storage.join(folder, name) for name in ("train", "val")}
    for url in urls.values():
        write_dataset(url, frame, part_rows=10)
    return urls
