from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))

from helpers import tiny_stream  # noqa: E402
from perennial.streams import Stream  # noqa: E402


@pytest.fixture
def stream() -> Stream:
    return tiny_stream()
