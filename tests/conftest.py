"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_intra_op_thread():
    """One intra-op thread for the module (as the app runs: cores // concurrency). The models under test
    are small, and two OpenMP threads on two shared, busy cores spin against each other (10-100x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """``shots(page_or_locator, name, for_readme=True)``: a screenshot, also copied to $VIZ_APP_SCREENSHOTS."""
    from browser_support import screenshot_saver
    return screenshot_saver(tmp_path_factory.mktemp("screenshots"))
