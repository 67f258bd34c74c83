"""The device option (`attention.device`, ``device=`` in load_model, ``--device`` in the CLIs), models in
float16 / bfloat16, the audit's DataLoader workers and its report, and exactness on an accelerator
(run where CUDA or MPS exists, skipped with the reason elsewhere)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import timm
import torch

from attention.capture import capture
from attention.cli import main as cli_main
from attention.device import DeviceUnavailableError, available, resolve_device
from attention.methods import compute_map
from attention.methods.grad_rollout import attention_gradients
from attention.methods.rollout import rollout_layers
from attention.models import demo_names, load_model

pytestmark = pytest.mark.usefixtures("single_intra_op_thread")
HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
ACCELERATOR = "cuda" if HAS_CUDA else "mps" if HAS_MPS else None
GRADIENT_MAPS = ["grad_rollout", "gradcam", "transformer_attribution", "attnlrp"]


def _vit(dtype=torch.float32):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, img_size=48, depth=3).eval().to(dtype)


def _x(b=2, seed=1):
    return torch.randn(b, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_auto_follows_what_torch_finds():
    want = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device(None).type == want
    assert resolve_device("CPU") == torch.device("cpu")
    assert available()[0] == "cpu"


@pytest.mark.parametrize("spec", ["cuda", "cuda:7", "mps"])
def test_unavailable_device_is_one_line(spec):
    if spec in available() or (spec == "cuda" and HAS_CUDA) or (spec == "cuda:7" and torch.cuda.device_count() > 7):
        pytest.skip(f"{spec} exists on this machine")
    with pytest.raises(DeviceUnavailableError) as e:
        resolve_device(spec)
    assert "\n" not in str(e.value) and spec in str(e.value) and "available: cpu" in str(e.value)
    with pytest.raises(DeviceUnavailableError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the error path needs a machine without it")
def test_clis_exit_2_on_an_unavailable_device(tmp_path, capsys):
    rc = cli_main(["export", "--model", "demo-vit", "--device", "cuda", "--out", str(tmp_path), "x.png"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith("error: device 'cuda' is not available")
    rc = cli_main(["audit", "--model", "demo-vit", "--device", "cuda:1", "--data", str(tmp_path), "--out",
                   str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "cuda:1" in err
    rc = cli_main(["audit", "--model", "demo-vit", "--engine", "ray", "--gpus-per-worker", "0.25", "--data",
                   str(tmp_path), "--out", str(tmp_path / "a")])      # refused before Ray starts
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--gpus-per-worker 0.25" in err and "no CUDA GPU" in err
    rc = cli_main(["audit", "--model", "demo-vit", "--engine", "ray", "--device", "tpu", "--data", str(tmp_path),
                   "--out", str(tmp_path / "a")])
    assert rc == 2 and "unknown device 'tpu'" in capsys.readouterr().err
    from viz_app.cli import main as app_main
    assert app_main(["--device", "cuda", "--port", "7998"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: device 'cuda' is not available")


@pytest.mark.skipif("demo-vit" not in demo_names(), reason="bundled demo-vit missing")
def test_load_model_device_and_capture_follow_the_model():
    lm = load_model("demo-vit", device="cpu")
    assert lm.device == torch.device("cpu")
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)   # another dtype: capture feeds the model's own
    r = lm.capture(x)
    assert r.input.dtype == torch.float32
    torch.testing.assert_close(r.logits, lm.capture(x.float()).logits, atol=0, rtol=0)


def test_bfloat16_model_maps_are_float32_and_follow_their_formula():
    """A bf16 model runs in bf16; each map is decided in float32 from its bf16 attention and gradients."""
    m16, m32 = _vit(torch.bfloat16), _vit()
    x = _x()
    r16 = capture(m16, x)                     # float32 input: cast to the model's dtype
    assert r16.input.dtype == r16.logits.dtype == r16.maps[0].weights.dtype == torch.bfloat16
    targets = [1, 5]
    for name in ["rollout"] + GRADIENT_MAPS:
        got = compute_map(name, r16, model=m16, x=x, target=targets).maps
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), name
        ref = compute_map(name, capture(m32, x), model=m32, x=x, target=targets).maps
        # bf16 keeps 8 bits of mantissa: the same map, to bf16 accuracy
        assert float((got - ref).abs().max()) <= 0.05 * float(ref.abs().max()), name
    # the gradient-weighted layer weights written out from the bf16 tensors, in float32
    with torch.enable_grad():
        live = capture(m16, x, keep_graph=True)
        layers = rollout_layers(live)
        grads = attention_gradients(live, layers, targets)
    from attention.methods.chained import chain_weighted
    mats = [(g.detach().float() * m.weights.detach().float()).clamp_min(0).mean(1) for m, g in zip(layers, grads)]
    torch.testing.assert_close(compute_map("grad_rollout", r16, model=m16, x=x, target=targets).maps,
                               chain_weighted(r16, mats), atol=1e-6, rtol=0)


@pytest.mark.skipif(ACCELERATOR is None, reason="no CUDA or MPS device on this machine: the device-exactness "
                                                "check runs where one exists")
def test_capture_and_maps_on_the_device_equal_the_cpu(monkeypatch):
    dev = torch.device(ACCELERATOR)
    # TF32 convolutions / matmuls would change the numbers by design (10 bits of mantissa): exact float32 here
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    m = _vit()
    x = _x()
    ref64 = capture(_vit(torch.float64), x.double())     # the CPU float64 result
    m.to(dev)
    r = capture(m, x)                                    # x on the CPU: moved to the model's device
    assert r.logits.device.type == dev.type
    for a, b in zip(r.maps, ref64.maps):
        np.testing.assert_allclose(a.weights.double().cpu().numpy(), b.weights.numpy(), atol=2e-5)
    mc = _vit()
    rc = capture(mc, x)
    for name in ["rollout"] + GRADIENT_MAPS:
        got = compute_map(name, r, model=m, x=x, target=[1, 5]).maps
        want = compute_map(name, rc, model=mc, x=x, target=[1, 5]).maps
        tol = 1e-4 * float(want.abs().max())
        np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), atol=tol, err_msg=name)


@pytest.mark.skipif("demo-vit" not in demo_names(), reason="bundled demo-vit missing")
def test_audit_with_loader_workers_equals_in_process_and_reports_its_device(tmp_path):
    from attention.audit import run_audit
    from attention.audit.shards import iter_shards
    from attention.demo.shapes import write_dataset
    root = str(tmp_path / "data")
    write_dataset(12, 3, root)
    outs = {}
    for w in (0, 2):
        out = str(tmp_path / f"out{w}")
        o = run_audit(root, out, "demo-vit", methods=["rollout", "grad_rollout", "gradcam"], batch_size=4,
                      shard_size=6, faithfulness_steps=0, device="cpu", loader_workers=w, quiet=True, html=False)
        outs[w] = (o.report, list(iter_shards(out, o.report["run"]["shards"])))
        with open(os.path.join(out, "report.json")) as f:
            run = json.load(f)["run"]
        assert run["device"] == "cpu" and run["batch_size"] == 4 and run["loader_workers"] == w
        assert run["images_per_second"] > 0
    for a, b in zip(outs[0][1], outs[2][1]):
        for k in a:
            if k.startswith(("map_", "logits", "head_", "border_")):
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
