"""Shared test settings: device and dtype come from the environment so the suite runs on a GPU too.

MTRL_TEST_DEVICE=cuda pytest  # run the same tests on a GPU
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("MTRL_TEST_DEVICE", "cpu"))
