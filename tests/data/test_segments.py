"""Time segments: the numbering scaling, the model's batches and evaluation share."""

import numpy as np
import pandas as pd

from container_component_src.data.segments import segment_ids, segment_starts


def test_segments_start_after_gaps() -> None:
    times = pd.DatetimeIndex(
        ["2021-01-01 00:00", "2021-01-01 00:01", "2021-01-01 00:02", "2021-01-01 03:00", "2021-01-01 03:01"], tz="UTC"
    ).as_unit("us")
    assert segment_ids(times).tolist() == [0, 0, 0, 1, 1]
    assert segment_ids(times[:1]).tolist() == [0]
    assert segment_ids(times[:0]).tolist() == []


def test_segment_starts_are_the_first_row_of_each_segment() -> None:
    assert segment_starts(np.array([0, 0, 1, 1, 1, 4])).tolist() == [0, 2, 5]
    assert segment_starts(np.array([7])).tolist() == [0]


def test_the_data_layer_imports_neither_the_model_nor_evaluation() -> None:
    """The layers point one way: data/ is below model/ and evaluation/ (it once imported the
    segments from evaluation/)."""
    import ast
    from pathlib import Path

    import container_component_src

    upward = []
    for path in (Path(container_component_src.__file__).parent / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            layers = ("container_component_src.model", "container_component_src.evaluation")
            upward += [f"{path.name}: {name}" for name in names if name.startswith(layers)]
    assert upward == []
