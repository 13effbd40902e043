"""Imported by the server process that forks local tuning workers (see `tune._worker_pool`): the
libraries every trial needs, loaded once and shared by the forked workers, and frozen out of the
garbage collector so that its passes do not write to (and so copy) the shared pages."""

import gc

import pytorch_lightning  # noqa: F401
import torch  # noqa: F401

from container_component_src.model import data, system, train  # noqa: F401

gc.freeze()
