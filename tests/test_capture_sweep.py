"""Coverage proven by sweeping: every timm module, and models beyond timm, against an aten-level reference.

For each entry of ``timm.list_modules()`` whose source can build attention (the others are CNNs, named
and skipped), the smallest model (random init, default input size; two blocks where it has over
10 M parameters) runs once plainly under `AtenAttentionRecorder`, which
records every softmax and recomputes every fused SDPA's weights, and once through `capture`.
Per model: the same number of attention ops in the same order, each equal to the reference, the
logits unchanged, and every map's layout labelled (known / inferred / unknown). A module whose model
computes no softmax attention (a CNN) passes with 0 = 0. ``python -m tests.capture_sweep`` prints
the table (family -> ops, maps, max error, layout kinds).
"""
from __future__ import annotations

import pytest
import timm
import torch

from attention.layout import LAYOUT_SOURCES
from tests.capture_sweep import TOL, check, extra_cases, source_mentions_attention, timm_case

#: families allowed to fail, each with the reason (at most three; none today)
EXCLUDED: dict[str, str] = {}


def _assert_row(row):
    assert not row.error, row.error
    assert row.ops == row.ref_ops, f"{row.model}: captured {row.ops} attention ops, the reference saw {row.ref_ops}"
    assert row.max_err <= TOL, f"{row.model}: max error {row.max_err:.2e}"
    assert row.logits_err <= 1e-4, f"{row.model}: logits moved by {row.logits_err:.2e} (relative)"
    assert all(k.split(":")[1] in LAYOUT_SOURCES for k in row.layouts), row.layouts
    assert sum(row.layouts.values()) == row.maps


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.slow
@pytest.mark.parametrize("module", timm.list_modules())
def test_timm_module(module):
    if module in EXCLUDED:
        pytest.xfail(EXCLUDED[module])
    if not source_mentions_attention(module):
        pytest.skip(f"timm module {module} mentions no softmax, SDPA, attention or transformer: a CNN")
    case = timm_case(module)
    if case is None:
        pytest.skip(f"timm module {module} registers no model")
    _assert_row(check(module, *case))


@pytest.mark.slow
@pytest.mark.parametrize("case", extra_cases(), ids=lambda c: f"{c[0]}:{c[1]}")
def test_beyond_timm(case):
    row = check(*case)
    _assert_row(row)
    assert row.ref_ops > 0, "every model here computes attention"


def test_excluded_families_are_few():
    assert len(EXCLUDED) <= 3
