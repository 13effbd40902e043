"""Imported at start-up by every Python process of `gpu_check.sh --dry-run` (this folder is put on
PYTHONPATH): the packages the GPU machine lacks cannot be imported, unless gpu_check.sh carries
them as wheels (GPU_CHECK_CARRIED, module names), so that a dry run here fails where the run on
that machine would, at no device time."""

import importlib.abc
import os
import sys

# Installed here (the project's environment), absent there (the device tool's KINDS.md lists
# what its image holds).
ABSENT = frozenset(
    {
        "boto3",
        "botocore",
        "dask",
        "distributed",
        "dotenv",
        "duckdb",
        "kfp",
        "kserve",
        "kubeflow",
        "kubernetes",
        "moto",
        "openpyxl",
        "optuna",
        "plotly",
        "polars",
        "python_calamine",
        "s3fs",
    }
)
CARRIED = frozenset(os.environ.get("GPU_CHECK_CARRIED", "").split())


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in ABSENT - CARRIED:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine, not carried)", name=name)


sys.meta_path.insert(0, _Absent())
