"""The named API of a served app through gradio_client: /predict and /attention_map."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.models import demo_names
from concurrency import run_in_threads

needs_demo = pytest.mark.skipif("demo-vit" not in demo_names(),
                                reason="assets/demo-vit.safetensors/.json missing (python -m attention.demo train "
                                       "--arch demo-vit)")


def pixels_sha(path: str) -> str:
    return hashlib.sha256(np.asarray(Image.open(path).convert("RGB")).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api_images")
    out = []
    for k, label in enumerate((4, 0, 3)):
        img, _, _ = make_sample(np.random.default_rng(300 + k), 64, label)
        path = folder / f"{CLASS_NAMES[label]}.png"
        Image.fromarray(img).save(path)
        out.append(str(path))
    return out


@pytest.fixture(scope="module")
def url():
    from viz_app.testing import served_app
    with served_app("--model", "demo-vit") as u:
        yield u


def client(url):
    from gradio_client import Client
    return Client(url, verbose=False)


@needs_demo
def test_api_lists_the_named_endpoints(url):
    info = client(url).view_api(print_info=False, return_format="dict")
    names = set(info["named_endpoints"])
    assert {"/predict", "/attention_map"} <= names
    params = [p["parameter_name"] for p in info["named_endpoints"]["/attention_map"]["parameters"]]
    assert params[:6] == ["image", "model", "method", "layer", "head", "query"]


@needs_demo
def test_predict_returns_top5_heatmap_and_checksum(url, images):
    from gradio_client import handle_file
    labels, heatmap, meta = client(url).predict(handle_file(images[0]), "demo-vit", api_name="/predict")
    assert len(labels["confidences"]) == 5
    assert sum(c["confidence"] for c in labels["confidences"]) <= 1 + 1e-5
    assert labels["label"] == meta["predictions"][0]["label"]
    assert meta["input_sha256"] == pixels_sha(images[0])
    assert meta["model"] == "demo-vit" and meta["grid"] == [8, 8] and meta["prefix_tokens"] == ["cls"]
    assert os.path.exists(heatmap) and Image.open(heatmap).size == (448, 448)


@needs_demo
def test_attention_map_settings_and_cache(url, images):
    from gradio_client import handle_file
    c = client(url)
    c.predict(handle_file(images[1]), "demo-vit", api_name="/predict")
    pic, meta = c.predict(handle_file(images[1]), model="demo-vit", method="raw", layer=2, head="1", query="3,4",
                          api_name="/attention_map")
    assert meta["cached"], "the same session and image must reuse the cached forward pass"
    assert meta["layer"] == 2 and meta["head"] == "1" and "patch (3, 4)" in meta["caption"]
    pic2, meta2 = c.predict(handle_file(images[1]), model="demo-vit", method="grad_rollout", target=2,
                            colormap="viridis", api_name="/attention_map")
    assert meta2["target"] == 2 and meta2["target_label"] == CLASS_NAMES[2]
    assert not np.array_equal(np.asarray(Image.open(pic)), np.asarray(Image.open(pic2)))


@needs_demo
def test_concurrent_requests_get_their_own_answers(url, images):
    from gradio_client import handle_file
    results = {}

    def run(k):
        c = client(url)
        for _ in range(2):
            _, _, meta = c.predict(handle_file(images[k]), "demo-vit", api_name="/predict")
            results.setdefault(k, []).append(meta["input_sha256"])
    errors = run_in_threads(run, range(3))
    assert not errors, errors
    for k in range(3):
        assert results[k] == [pixels_sha(images[k])] * 2


@needs_demo
def test_errors_are_clear_messages(url, tmp_path, images):
    from gradio_client import handle_file
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    c = client(url)
    with pytest.raises(Exception, match="not an image file"):
        c.predict(handle_file(str(bad)), "demo-vit", api_name="/predict")
    with pytest.raises(Exception, match="unknown method"):
        c.predict(handle_file(images[0]), "demo-vit", "magic", api_name="/attention_map")
    with pytest.raises(Exception, match="unknown model"):
        c.predict(handle_file(images[0]), "no_such_model_xyz", api_name="/predict")


def test_app_module_exposes_demo_and_cli_warns(monkeypatch):
    import gradio as gr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import app
    assert isinstance(app.demo, gr.Blocks)
    from viz_app.cli import build_parser, exposure_warnings
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    assert exposure_warnings("127.0.0.1", False) == []
    assert any("public" in w for w in exposure_warnings("127.0.0.1", True))
    assert any("other machines" in w for w in exposure_warnings("0.0.0.0", False))
