"""The suite's own settings take effect in every test worker."""

from __future__ import annotations

import os

import torch


def test_torch_uses_the_threads_conftest_sets():
    """conftest sets `OMP_NUM_THREADS` before anything imports torch (a plugin that
    imported it first would leave torch on one thread per core and the suite 2.5x slower)."""
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
