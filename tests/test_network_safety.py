"""A class on the network, safely (issue 22): no code from model folders, only regular files by path, no file
oracle, per-session custom models, login, a hub that never answers, bounded memory and disk, notes keyed on the
file, and every API value checked.

Everything runs the real paths: transformers folders written by ``save_pretrained``, the bundled demo-vit in a
served app, real FIFOs and sockets. Nothing of the model path is mocked.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from attention.models import demo_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_demo = pytest.mark.skipif("demo-vit" not in demo_names(), reason="assets/demo-vit missing")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def run_cli(args: list[str], timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command line run with stdin closed (a prompt would read EOF at once, never wait for a keystroke)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env=env or ENV)


def photo_file(path, seed: int = 0, size: int = 64) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return str(path)


# ------------------------------------------------------------------------------ 1. no code from a model folder
def _vit_folder(folder) -> str:
    import transformers
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8, num_labels=3)
    transformers.ViTForImageClassification(cfg).save_pretrained(str(folder))
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(params=["custom_type", "known_type"])
def code_folder(request, tmp_path):
    """A save_pretrained folder whose config.json points (auto_map) at a .py beside it that would leave a marker
    file: with an unknown model_type (transformers would ask on the terminal) and with a known one."""
    folder = _vit_folder(tmp_path / "model")
    marker = tmp_path / "code_ran.txt"
    with open(os.path.join(folder, "evil.py"), "w") as f:
        f.write(f"open({str(marker)!r}, 'w').write('ran')\n"
                "from transformers import ViTConfig as EvilConfig, ViTForImageClassification as EvilModel\n")
    path = os.path.join(folder, "config.json")
    cfg = json.load(open(path))
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForImageClassification": "evil.EvilModel"}
    if request.param == "custom_type":
        cfg["model_type"], cfg["architectures"] = "evil-vit", ["EvilModel"]
    json.dump(cfg, open(path, "w"))
    return folder, marker


def test_a_folder_asking_to_run_its_code_is_refused_by_load_model(code_folder):
    from attention.errors import CheckpointError
    from attention.models import load_model
    folder, marker = code_folder
    for name in (f"hf:{folder}", folder):
        with pytest.raises(CheckpointError, match="never runs code") as e:
            load_model(name)
        assert "auto_map" in str(e.value) and "evil.EvilModel" in str(e.value)
    assert not marker.exists()


def test_cli_export_and_app_start_refuse_such_a_folder_without_a_prompt(code_folder, tmp_path):
    folder, marker = code_folder
    img = photo_file(tmp_path / "x.png")
    out = tmp_path / "out"
    for args in (["-m", "attention", "export", "--model", f"hf:{folder}", "--out", str(out), img],
                 ["app.py", "--model", f"hf:{folder}", "--port", "1"]):
        r = run_cli(args)
        said = r.stdout + r.stderr
        assert r.returncode == 2, said
        assert "never runs code" in r.stderr and "auto_map" in r.stderr, said
        assert "Do you wish" not in said and "[y/N]" not in said and "Traceback" not in said, said
    assert not marker.exists() and not out.exists()
