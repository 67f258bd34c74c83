"""Checkpoints as the real training code writes them load exactly, without running code from the file.

Producers: timm's own ``train.py`` (a committed file it wrote, see tests/fixtures/timm_train) and
timm's `CheckpointSaver` run here; a torchvision-references-style dict with ``args`` and an
``AveragedModel`` EMA; ``torch.compile`` over real ``DistributedDataParallel`` (and the reverse);
a real Lightning ``Trainer`` ``.ckpt``. Each is compared with the producer's own loading (timm's
``load_checkpoint``, the module objects themselves) on the same input.
"""
from __future__ import annotations

import argparse
import os
import socket

import pytest
import timm
import torch
from torch import nn

from attention.errors import CheckpointError, LabelsError, ModelNotFoundError
from attention.models import load_model
from attention.models.architecture import fitting
from attention.models.checkpoint import read_checkpoint

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "timm_train", "model_best.pth.tar")


def _same(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


def _trained_pair(num_classes=3, img_size=32, seed=0):
    """A test_vit after one optimiser step and its EMA (so live and EMA weights differ)."""
    torch.manual_seed(seed)
    model = timm.create_model("test_vit", num_classes=num_classes, img_size=img_size)
    from timm.utils import ModelEmaV3
    ema = ModelEmaV3(model, decay=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x, y = torch.randn(4, 3, img_size, img_size), torch.randint(0, num_classes, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    ema.update(model)
    return model.eval(), ema.module.eval(), opt


def test_timm_train_py_file_loads_ema_by_default_and_live_on_request():
    """The file timm's train.py wrote: architecture, classes and input size from its own entries."""
    from timm.data import resolve_data_config
    from timm.models import load_checkpoint
    x = torch.randn(2, 3, 64, 64)
    raw = torch.load(FIXTURE, weights_only=False)       # the test trusts its own fixture
    for ema in (True, False):
        theirs = timm.create_model("test_vit", num_classes=2)
        load_checkpoint(theirs, FIXTURE, use_ema=ema, weights_only=False)
        ours = load_model(checkpoint=FIXTURE, ema=None if ema else False)
        assert ours.name == "test_vit" and ours.num_classes == 2
        assert "arch" in ours.info["architecture_from"]
        assert _same(ours.model(x), theirs.eval()(x)) == 0.0
        assert ours.info["checkpoint"]["entry"] == ("state_dict_ema" if ema else "state_dict")
        # preprocessing as train.py resolved it from its args (--img-size 64)
        assert ours.preprocess.input_size == tuple(resolve_data_config(vars(raw["args"]), model=theirs)["input_size"][1:])
    notes = load_model(checkpoint=FIXTURE).info["checkpoint"]["notes"]
    assert any("EMA" in n and "--live-weights" in n for n in notes)
    # EMA and live differ in this file, so the choice is observable
    assert any(_same(raw["state_dict"][k], raw["state_dict_ema"][k]) > 0 for k in raw["state_dict"])


def test_timm_checkpoint_saver_with_a_namespace(tmp_path):
    from timm.models import load_checkpoint
    from timm.utils import CheckpointSaver
    model, ema_model, opt = _trained_pair()
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="test_vit")
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--mean", type=float, nargs=3, default=None)
    parser.add_argument("--model-kwargs", default={"img_size": 32})
    args = parser.parse_args([])

    class _Ema:     # CheckpointSaver reads `.state_dict()` of what it is given, unwrapped
        def __init__(self, m):
            self.module = m

        def state_dict(self):
            return self.module.state_dict()

    saver = CheckpointSaver(model, opt, args=args, model_ema=_Ema(ema_model), checkpoint_dir=str(tmp_path),
                            recovery_dir=str(tmp_path), max_history=1)
    saver.save_checkpoint(epoch=0, metric=0.5)
    path = os.path.join(tmp_path, "last.pth.tar")
    x = torch.randn(2, 3, 32, 32)
    for ema, reference in ((None, ema_model), (False, model)):
        ours = load_model(checkpoint=path, ema=ema)
        theirs = timm.create_model("test_vit", num_classes=3, img_size=32)
        load_checkpoint(theirs, path, use_ema=ema is None, weights_only=False)
        assert _same(ours.model(x), theirs.eval()(x)) == 0.0
        assert _same(ours.model(x), reference(x)) == 0.0
        assert ours.info["model_kwargs"] == {"img_size": 32}
    assert _same(ema_model(x), model(x)) > 1e-4


def test_torchvision_references_style_dict_with_args_and_averaged_ema(tmp_path):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    model, _, opt = _trained_pair(seed=1)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5))   # torchvision references' EMA base
    ema.update_parameters(model)        # the first update copies; the second averages
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ema.update_parameters(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    args = argparse.Namespace(model="test_vit", epochs=1, lr=0.5, output_dir=str(tmp_path), val_crop_size=32,
                              model_ema=True, model_ema_decay=0.5, weights=None)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                "epoch": 0, "args": args, "model_ema": ema.state_dict()}, path)
    assert "n_averaged" in ema.state_dict() and all(k.startswith("module.") for k in ema.state_dict() if k != "n_averaged")
    x = torch.randn(2, 3, 32, 32)
    ours = load_model(checkpoint=str(path))
    assert ours.info["checkpoint"]["entry"] == "model_ema"
    assert _same(ours.model(x), ema.module.eval()(x)) == 0.0
    live = load_model("test_vit", checkpoint=str(path), ema=False)
    assert _same(live.model(x), model(x)) == 0.0
    assert _same(ours.model(x), live.model(x)) > 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_compile_over_ddp_and_ddp_over_compile_keys(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    model, _, _ = _trained_pair(seed=2)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        wrapped = {"compile_ddp": torch.compile(DDP(model)), "ddp_compile": DDP(torch.compile(model)),
                   "dataparallel_ddp": nn.DataParallel(DDP(model))}
        x = torch.randn(2, 3, 32, 32)
        for tag, w in wrapped.items():
            sd = w.state_dict()
            first = next(iter(sd))
            assert first.startswith(("_orig_mod.module.", "module._orig_mod.", "module.module.")), first
            path = tmp_path / f"{tag}.pth"
            torch.save(sd, path)
            ours = load_model("test_vit", checkpoint=str(path), img_size=None)
            assert _same(ours.model(x), model(x)) == 0.0, tag
    finally:
        dist.destroy_process_group()


def test_lightning_trainer_checkpoint(tmp_path):
    L = pytest.importorskip("lightning", reason="lightning is a test dependency (requirements.txt)")
    from torch.utils.data import DataLoader, TensorDataset

    class Classifier(L.LightningModule):
        def __init__(self, model_name="test_vit", num_classes=3, class_names=("cat", "dog", "teapot")):
            super().__init__()
            self.save_hyperparameters()
            self.net = timm.create_model(model_name, num_classes=num_classes, img_size=32)
            self.criterion = nn.CrossEntropyLoss(weight=torch.ones(num_classes))   # a second sub-module

        def training_step(self, batch, i):
            x, y = batch
            return self.criterion(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))), batch_size=4)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    module = Classifier()
    trainer.fit(module, data)
    path = tmp_path / "epoch=0.ckpt"
    trainer.save_checkpoint(path)
    ours = load_model(checkpoint=str(path))
    module.eval()
    x = torch.randn(2, 3, 32, 32)
    assert ours.name == "test_vit" and ours.class_names == ["cat", "dog", "teapot"]
    assert ours.info["prefix_removed"] == "net."
    assert _same(ours.model(x), module.net(x)) == 0.0
    # a labels count that contradicts the classifier is named, not guessed
    raw = torch.load(path, weights_only=False)
    raw["hyper_parameters"]["class_names"] = ("cat", "dog")
    torch.save(raw, tmp_path / "two_names.ckpt")
    with pytest.raises(LabelsError, match=r"hyper_parameters.class_names lists 2 names but its classifier has 3"):
        load_model(checkpoint=str(tmp_path / "two_names.ckpt"))


def test_code_in_a_pickle_never_runs_and_the_refusal_names_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError) as e:
        load_model("test_vit", checkpoint=str(path))
    msg = str(e.value)
    assert not marker.exists()
    assert "\x1b" not in msg
    assert "refused to load evil.pth" in msg and "system" in msg          # the type it met
    assert "'state_dict' (1 tensors)" in msg                             # where the weights are
    assert "torch.save(c['state_dict'], 'weights.pth')" in msg and msg.endswith("load weights.pth")


def test_a_whole_pickled_model_is_refused_with_the_way_out(tmp_path):
    model, _, _ = _trained_pair(seed=3)
    path = tmp_path / "whole.pth"
    torch.save(model, path)
    with pytest.raises(CheckpointError) as e:
        load_model("test_vit", checkpoint=str(path))
    msg = str(e.value)
    assert "timm.models.vision_transformer.VisionTransformer" in msg and "whole pickled model" in msg
    assert "torch.save(c.state_dict(), 'weights.pth')" in msg
    # the way out, as a user who trusts the file would do it, then loads exactly
    c = torch.load(path, weights_only=False)
    torch.save(c.state_dict(), tmp_path / "weights.pth")
    x = torch.randn(1, 3, 32, 32)
    assert _same(load_model("test_vit", checkpoint=str(tmp_path / "weights.pth")).model(x), model(x)) == 0.0


def test_plain_types_training_scripts_store_are_read(tmp_path):
    import pathlib

    import numpy as np
    model, _, _ = _trained_pair(seed=4)
    path = tmp_path / "extras.pt"
    torch.save({"model_state_dict": model.state_dict(), "best_acc": np.float64(0.5), "seen": np.arange(3),
                "out": pathlib.Path("/tmp/run"), "shape": torch.Size([3, 32, 32]), "dtype": torch.float16,
                "classes": ["a", "b", "c"]}, path)
    ck = read_checkpoint(str(path))
    assert ck.entry == "model_state_dict" and float(ck.meta["best_acc"]) == 0.5
    lm = load_model("test_vit", checkpoint=str(path))
    assert lm.class_names == ["a", "b", "c"]


def test_architecture_from_the_weight_shapes(tmp_path):
    torch.manual_seed(0)
    vit_s = timm.create_model("vit_small_patch16_224", num_classes=10).eval()
    path = tmp_path / "finetuned_vits.pth"
    torch.save(vit_s.state_dict(), path)
    # the wrong architecture: the message names those that fit, first
    with pytest.raises(CheckpointError) as e:
        load_model("vit_base_patch16_224", checkpoint=str(path))
    msg = str(e.value)
    assert msg.startswith("finetuned_vits.pth does not fit vit_base_patch16_224. architectures whose every weight "
                          "shape fits finetuned_vits.pth: vit_small_patch16_224")
    # no name: the plainest fitting architecture, said to be inferred
    lm = load_model(checkpoint=str(path))
    assert lm.name == "vit_small_patch16_224" and "inferred from the weights' shapes" in lm.info["architecture_from"]
    x = torch.randn(1, 3, 224, 224)
    assert _same(lm.model(x), vit_s(x)) == 0.0
    # every proposal really loads
    for cand in fitting(vit_s.state_dict(), 10):
        name = cand.split(" (img_size")[0]
        size = int(cand.split("img_size ")[1].rstrip(")")) if "img_size" in cand else None
        assert load_model(name, checkpoint=str(path), img_size=size).num_classes == 10


def test_nothing_fits_gets_a_way_out(tmp_path):
    path = tmp_path / "mlp.pth"
    torch.save(nn.Sequential(nn.Linear(4, 4)).state_dict(), path)
    with pytest.raises(ModelNotFoundError, match="does not say which architecture .* give the architecture name"):
        load_model(checkpoint=str(path))


def test_ema_only_on_request_and_errors(tmp_path):
    model, _, _ = _trained_pair(seed=5)
    path = tmp_path / "plain.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="holds one set of weights, no EMA weights"):
        read_checkpoint(str(path), ema=True)
    torch.save({"state_dict_ema": model.state_dict()}, tmp_path / "ema_only.pth")
    with pytest.raises(CheckpointError, match="holds only EMA weights"):
        read_checkpoint(str(tmp_path / "ema_only.pth"), ema=False)
    torch.save({"a": {"b": 1}, "c": 2}, tmp_path / "none.pth")
    with pytest.raises(CheckpointError, match="no weights entry"):
        read_checkpoint(str(tmp_path / "none.pth"))


def test_the_app_takes_the_architecture_from_the_checkpoint(tmp_path):
    """'Your own model' starts on "(from the checkpoint)": timm's train.py file loads as what it
    names; a wrong choice is refused with the architectures that fit, and the serving model stays."""
    from viz_app.models import FROM_CHECKPOINT, LocalPath, ModelManager
    mgr = ModelManager(pretrained=False)
    name = mgr.register(FROM_CHECKPOINT, FIXTURE)
    assert name.startswith("test_vit · model_best.pth.tar")
    x = torch.randn(1, 3, 64, 64)
    theirs = timm.create_model("test_vit", num_classes=2)
    from timm.models import load_checkpoint
    load_checkpoint(theirs, FIXTURE, use_ema=True, weights_only=False)
    assert _same(mgr.get(name).model(x), theirs.eval()(x)) == 0.0
    by_path = mgr.register_path(LocalPath(FIXTURE), "")
    assert by_path.startswith("test_vit · model_best.pth.tar")
    with pytest.raises(CheckpointError, match="model_best.pth.tar says it was trained as test_vit"):
        mgr.register("vit_small_patch16_224", FIXTURE)


def test_the_app_loads_live_weights_on_request():
    from viz_app.callbacks import Callbacks
    from viz_app.models import FROM_CHECKPOINT, ModelManager
    cb = Callbacks(ModelManager(pretrained=False))
    ema_name = cb.manager.register(FROM_CHECKPOINT, FIXTURE, session="s")
    live_name = cb.load_custom("s", FROM_CHECKPOINT, FIXTURE, ema=False)
    assert ema_name != live_name and "live weights" in live_name
    raw = torch.load(FIXTURE, weights_only=False)
    live = cb.manager.get(live_name).model.state_dict()
    ema = cb.manager.get(ema_name).model.state_dict()
    assert all(torch.equal(live[k], raw["state_dict"][k]) for k in live)
    assert all(torch.equal(ema[k], raw["state_dict_ema"][k]) for k in ema)
