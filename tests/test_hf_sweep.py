"""Every vision model type of the installed transformers, built tiny, against an independent reference.

The types are enumerated from transformers' auto mappings (`tests.hf_sweep.vision_types`), so a type
that a newer transformers adds is swept here without anyone listing it. Per type (`sweep_type`): a
random-init tiny model runs once plainly under the aten-level recorder (`attention_reference`) and
once through `capture`; every softmax must equal its reference record, every map must have a layout
(or be non-spatial by nature), and per distinct geometry a *probe* checks the layout independently:
the pixels of one grid cell are perturbed and the token of the attention module's own input that
changes most must be the token the layout (or the window geometry) puts at that cell; then the raw
view of that cell equals the reference record written out by the layout.

A type that is not exact is either without softmax attention (a CNN: shown by its source or a
meta-device forward), not swept (`NOT_SWEPT`, with the reason), or listed in `KNOWN_WRONG` with what
is wrong; a listed type that becomes exact fails the test, so the list only shrinks.
``python -m tests.hf_sweep`` prints the table.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tests.hf_sweep import sweep_type, vision_types  # noqa: E402

#: types whose capture is exact but whose geometry is not yet right, each with what is wrong
KNOWN_WRONG: dict[str, str] = {
}


#: types whose folders the loader refuses, each with the reason its message must give
LOADER_REFUSES: dict[str, str] = {
    "sam": "longest edge", "sam_hq": "longest edge",   # resize the longest edge, then pad: no one fixed crop
    "swin2sr": "input size is not fixed",              # pads each photo to whole windows
    "timm_backbone": "could not be loaded",            # transformers reads the folder path as a timm model name
}


@pytest.fixture(autouse=True, scope="module")
def _quiet_two_threads():
    import transformers
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(level)
    torch.set_num_threads(old)


def test_the_sweep_enumerates_the_installed_types():
    types = vision_types()
    # the families the project documents are among them, each with the class the sweep builds
    for t in ("vit", "deit", "beit", "dinov2", "swin", "clip", "siglip", "sam", "yolos", "vitdet", "hiera"):
        assert t in types, t
    assert len(types) >= 60


@pytest.mark.parametrize("model_type", list(vision_types()))
def test_hf_type(model_type):
    row = sweep_type(model_type)
    if model_type in LOADER_REFUSES:
        assert row.loader.startswith("refused:") and LOADER_REFUSES[model_type] in row.loader, row.loader
    elif row.status == "exact":
        assert row.loader == "exact", f"{model_type} through load_model(folder): {row.loader}"
    if row.status == "refused":
        return
    if row.status in ("no attention", "not swept"):
        assert row.detail, f"{model_type}: {row.status} without a reason"
        return
    if model_type in KNOWN_WRONG:
        assert row.status != "exact", f"{model_type} is exact now: remove it from KNOWN_WRONG"
        pytest.xfail(f"{KNOWN_WRONG[model_type]} [{row.status}: {row.detail}]")
    assert row.status == "exact", f"{model_type} ({row.cls}): {row.status}: {row.detail}"
    assert row.ops == row.ref_ops > 0 and row.probes >= 1
