"""Shared test settings: device and dtype come from the environment so the suite runs on a GPU too.

MTRL_TEST_DEVICE=cuda pytest  # run the same tests on a GPU
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# One thread: the tests' matrices are small, and several threads only add contention.
torch.set_num_threads(1)


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("MTRL_TEST_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every test runs on one thread, restored afterwards (trainers set their configured thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
