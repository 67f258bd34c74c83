"""The transformers sweep's row for a type whose input is colour-cluster ids (ImageGPT), not pixels.

ImageGPT's processor resizes the photo to ``h x w`` and replaces each pixel by its nearest colour
cluster. The tiny model (``n_positions`` 64, ``vocab_size`` 17) gets its own processor with 16 fixed
random clusters in [-1, 1] at 8 x 8; `capture` sees the model fed pixels
(`attention.families.hf_imagegpt.ColourClusterInput`) and is checked like every other type
(`tests.hf_sweep.check_model`: every softmax against the aten reference, the geometry probe, a raw
view); the loader row saves model and processor, loads the folder and requires the ids the loaded
model computes from the prepared pixels to equal the processor's own ``input_ids``.
"""
from __future__ import annotations

import math
import tempfile

import torch


def tiny_processor(cfg):
    """ImageGPT's own processor for the tiny config: ``vocab_size - 1`` clusters, a square of ``n_positions``."""
    from transformers import ImageGPTImageProcessor
    side = math.isqrt(int(cfg.n_positions))
    g = torch.Generator().manual_seed(0)
    clusters = torch.rand(int(cfg.vocab_size) - 1, 3, generator=g) * 2 - 1
    return ImageGPTImageProcessor(clusters=clusters.numpy(), size={"height": side, "width": side})


def sweep_colour_clusters(row, model, cfg) -> None:
    """Fill `row` (a `tests.hf_sweep.Row`) for an ImageGPT model built tiny."""
    from attention.families.hf_imagegpt import ColourClusterInput
    from tests.hf_sweep import _photo, check_model
    proc = tiny_processor(cfg)
    x = proc(images=_photo(), return_tensors="pt", do_color_quantize=False)["pixel_values"].float()
    problems, _ = check_model(row, ColourClusterInput(model, proc), x)
    row.status = "wrong" if problems else "exact" if row.ref_ops else "no attention"
    row.detail = "; ".join(problems)
    row.loader = loader_check(model, proc)


def loader_check(model, proc) -> str:
    from attention.errors import CheckpointError
    from attention.models import load_model
    from tests.hf_sweep import Row, _photo, check_model
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        proc.save_pretrained(folder)
        try:
            lm = load_model(folder)
            x = lm.prepare(_photo()).tensor
        except CheckpointError as e:
            return f"refused: {e}"
        if not torch.equal(lm.model.input_ids(x), proc(images=_photo(), return_tensors="pt")["input_ids"]):
            return "the loaded model's colour-cluster ids differ from the processor's input_ids"
        problems, _ = check_model(Row("imagegpt"), lm.model, x)
        return "; ".join(problems) if problems else "exact"
