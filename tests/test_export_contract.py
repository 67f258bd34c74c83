"""The export's npz is what the README's table says: every key, its shape and its meaning.

The table is read from README.md itself, so a refactor that changes a key, a shape or adds an
undocumented one fails here. Meanings are checked against the exported attention itself:
``raw`` is the CLS row of every layer and head, ``rollout`` the rollout formula written out.
"""
from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from attention.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_npz_keys() -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = text.split("| npz key | shape | content |", 1)[1].split("\n\n", 1)[0]
    keys = []
    for row in table.strip().splitlines()[1:]:
        first = row.split("|")[1]
        keys += re.findall(r"`([a-z_0-9]+)`", first)
    return keys


def test_npz_keys_shapes_and_meanings_are_the_readmes(tmp_path):
    img = tmp_path / "shape.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    assert cli_main(["export", "--model", "demo-vit", "--methods", "raw,grad_rollout,gradcam", "--out", str(out),
                     "--quiet", str(img)]) == 0
    z = np.load(out / "shape.npz")
    documented = readme_npz_keys()
    L = len(z["layer_names"])
    # `attn_00`, `attn_01`, ... stands for one key per layer
    expected = {k for k in documented if not k.startswith("attn_")} | {f"attn_{i:02d}" for i in range(L)}
    assert set(z.files) == expected, (sorted(set(z.files) - expected), sorted(expected - set(z.files)))

    gh, gw = (int(v) for v in z["grid"])
    p = int(z["num_prefix_tokens"])
    H, W = z["input"].shape[2:]
    assert z["input"].shape == (1, 3, H, W) and z["input"].dtype == np.float32
    assert z["logits"].shape[0] == 1 and z["layer_names"].shape == (L,)
    heads = z["attn_00"].shape[1]
    for i in range(L):
        assert z[f"attn_{i:02d}"].shape == (1, heads, p + gh * gw, p + gh * gw)
    for k in ("heatmap", "rollout", "grad_rollout", "gradcam"):
        assert z[k].shape == (gh, gw), k
    assert z["layout_sources"].shape == (L,)
    # raw: (layers, heads, gh, gw), CLS -> patch attention of every head
    assert z["raw"].shape == (L, heads, gh, gw)
    for i in range(L):
        np.testing.assert_allclose(z["raw"][i], z[f"attn_{i:02d}"][0, :, 0, p:].reshape(heads, gh, gw), atol=0)
    # rollout: mean over heads, + I, rows re-normalised, multiplied in order, CLS row over the patches
    R = np.eye(p + gh * gw)
    for i in range(L):
        a = z[f"attn_{i:02d}"][0].astype(np.float64).mean(0) + np.eye(R.shape[0])
        R = (a / a.sum(-1, keepdims=True)) @ R
    np.testing.assert_allclose(z["rollout"], R[0, p:].reshape(gh, gw), rtol=1e-4, atol=1e-6)
