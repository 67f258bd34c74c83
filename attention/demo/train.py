"""Deterministic CPU training of the demo models on freshly generated shapes.

Every step draws a new batch from ``np.random.default_rng([seed, step])`` (infinite data, no
overfitting), so a run is a pure function of (arch, config, steps, seed, batch size, ...): the same
arguments give bit-identical weights in the same process/machine. ``train`` is the library entry point
(with a progress callback and a stop flag for a "watch it learn" view); ``train_and_save`` also
evaluates on a held-out set and writes ``assets/<name>.safetensors`` + ``assets/<name>.json``.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import DEMO_ARCHS, build_model, default_config
from .quality import evaluate_model, to_tensor
from .shapes import CLASS_NAMES, make_batch, make_dataset

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
IMG_SIZE = 64
VAL_SEED = 777        # held-out validation set written into the JSON (training never uses it)
ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets")

# Shipped-weights recipes: steps / batch / lr chosen to fit ~4-10 min on 2 CPU cores.
RECIPES = {
    "demo-vit": {"steps": 1500, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "warmup": 100},
    "demo-torch-vit": {"steps": 2000, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "warmup": 100},
    "demo-cnn-selfattn": {"steps": 1200, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05, "warmup": 50},
    "demo-cnn-attnpool": {"steps": 1200, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05, "warmup": 50},
}


def recipe(arch: str) -> dict:
    if arch not in RECIPES:
        raise KeyError(f"unknown demo arch {arch!r}; expected one of {DEMO_ARCHS}")
    return dict(RECIPES[arch])


def batch_tensors(seed: int, step: int, batch_size: int, size: int = IMG_SIZE, augment: bool = True):
    """The training batch of `step`: (x normalised (B, 3, H, W), y (B,)). Pure function of its args."""
    rng = np.random.default_rng([seed, step])
    images, _, labels = make_batch(rng, batch_size, size)
    if augment:  # horizontal flips (the classes are flip-invariant)
        flip = rng.random(batch_size) < 0.5
        images[flip] = images[flip, :, ::-1]
    return to_tensor(images, MEAN, STD), torch.from_numpy(labels)


def _lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float = 0.01) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n.endswith(("pos_embed", "cls_token")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lr: float,
                   check_finite: bool = False, step: Optional[int] = None) -> tuple[float, float]:
    """One training step at learning rate `lr` on the batch (x, y): cross-entropy, gradients clipped to
    norm 1, ``opt.step()``. Returns (loss, batch accuracy). ``check_finite``: raise FloatingPointError,
    before the weights change, when the loss or the gradient norm is not finite (`step`: for the message)."""
    for g in opt.param_groups:
        g["lr"] = lr
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    value = float(loss.detach())
    where = f" at step {step}" if step is not None else ""
    if check_finite and not math.isfinite(value):
        raise FloatingPointError(f"the loss became {value}{where}; try a smaller learning rate")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    if check_finite and not math.isfinite(norm):
        raise FloatingPointError(f"the gradient became {norm}{where}; try a smaller learning rate")
    opt.step()
    return value, float((logits.argmax(1) == y).float().mean())


def train(arch: str, steps: Optional[int] = None, seed: int = 0, batch_size: Optional[int] = None, *,
          lr: Optional[float] = None, weight_decay: Optional[float] = None, warmup: Optional[int] = None,
          config: Optional[dict] = None, num_classes: int = len(CLASS_NAMES), size: int = IMG_SIZE,
          num_threads: Optional[int] = None, deterministic: bool = True,
          progress_callback: Optional[Callable[[int, float, float], None]] = None, callback_every: int = 50,
          should_stop: Optional[Callable[[], bool]] = None, model: Optional[nn.Module] = None):
    """Train a demo model on fresh shapes batches. Returns ``(model, history)`` with the model in eval mode.

    ``progress_callback(step, loss, acc)`` is called every `callback_every` steps and after the last
    step (loss / acc: mean over the steps since the previous call; `step` counts finished steps).
    ``should_stop()`` is polled before every step; when it returns True training ends early (the
    partly trained model is returned, ``history["stopped"]`` is True). Defaults for steps,
    batch_size, lr, weight_decay and warmup come from ``RECIPES[arch]``. `model` lets a caller pass
    a freshly built model to train (else it is built from `config` after seeding).
    history: {"step", "loss", "acc", "lr"} lists (one entry per callback interval), "seconds",
    "steps_done", "stopped", "config", "hparams".
    """
    r = recipe(arch)
    steps = r["steps"] if steps is None else int(steps)
    batch_size = r["batch_size"] if batch_size is None else int(batch_size)
    lr = r["lr"] if lr is None else lr
    weight_decay = r["weight_decay"] if weight_decay is None else weight_decay
    warmup = min(r["warmup"], max(1, steps // 10)) if warmup is None else warmup
    cfg = default_config(arch)
    cfg.update(config or {})

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    if num_threads:
        torch.set_num_threads(num_threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    history = {"step": [], "loss": [], "acc": [], "lr": [], "seconds": 0.0, "steps_done": 0, "stopped": False,
               "config": cfg, "hparams": {"steps": steps, "batch_size": batch_size, "lr": lr,
                                          "weight_decay": weight_decay, "warmup": warmup, "seed": seed}}
    try:
        torch.manual_seed(seed)
        if model is None:
            model = build_model(arch, cfg, num_classes)
        model.train()
        opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999))
        t0 = time.perf_counter()
        run_loss, run_acc, run_n = 0.0, 0.0, 0
        for step in range(steps):
            if should_stop is not None and should_stop():
                history["stopped"] = True
                break
            cur_lr = _lr_at(step, steps, lr, warmup)
            x, y = batch_tensors(seed, step, batch_size, size)
            l, a = optimizer_step(model, opt, x, y, cur_lr)
            run_loss += l
            run_acc += a
            run_n += 1
            history["steps_done"] = step + 1
            if (step + 1) % callback_every == 0 or step + 1 == steps:
                l, a = run_loss / run_n, run_acc / run_n
                history["step"].append(step + 1)
                history["loss"].append(l)
                history["acc"].append(a)
                history["lr"].append(cur_lr)
                run_loss, run_acc, run_n = 0.0, 0.0, 0
                if progress_callback is not None:
                    progress_callback(step + 1, l, a)
        history["seconds"] = time.perf_counter() - t0
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)
    model.eval()
    return model, history


def metadata(name: str, arch: str, config: dict, training: dict) -> dict:
    """The JSON written next to the weights (what the loader needs to rebuild and preprocess)."""
    return {"name": name, "arch": arch, "config": config, "class_names": list(CLASS_NAMES),
            "preprocess": {"input_size": [3, IMG_SIZE, IMG_SIZE], "mean": list(MEAN), "std": list(STD),
                           "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"},
            "training": training}


def save_model(model: nn.Module, meta: dict, out_dir: str) -> tuple[str, str]:
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    st = os.path.join(out_dir, f"{meta['name']}.safetensors")
    js = os.path.join(out_dir, f"{meta['name']}.json")
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() if v.is_floating_point() else v.contiguous()
               for k, v in model.state_dict().items()}
    save_file(tensors, st, metadata={"arch": meta["arch"], "name": meta["name"]})
    with open(js, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return st, js


def load_demo(name_or_json: str, assets_dir: str = ASSETS_DIR) -> tuple[nn.Module, dict]:
    """Load shipped weights: "demo-vit" (looked up in `assets_dir`) or a path to the JSON. Eval mode."""
    from safetensors.torch import load_file
    js = name_or_json if name_or_json.endswith(".json") else os.path.join(assets_dir, f"{name_or_json}.json")
    with open(js) as f:
        meta = json.load(f)
    model = build_model(meta["arch"], meta["config"], len(meta["class_names"]))
    model.load_state_dict(load_file(os.path.join(os.path.dirname(js), f"{meta['name']}.safetensors")))
    return model.eval(), meta


def train_and_save(arch: str, out_dir: str = ASSETS_DIR, name: Optional[str] = None, steps: Optional[int] = None,
                   seed: int = 0, batch_size: Optional[int] = None, num_threads: Optional[int] = 2,
                   val_n: int = 1000, verbose: bool = True, **kw) -> dict:
    """Train, evaluate on a held-out set (seed `VAL_SEED`) and write <name>.safetensors/.json."""
    name = name or arch

    def cb(step, loss, acc):
        if verbose:
            print(f"[{arch}] step {step:5d}  loss {loss:.4f}  acc {acc:.3f}", flush=True)

    model, hist = train(arch, steps, seed, batch_size, num_threads=num_threads, progress_callback=cb, **kw)
    images, masks, labels = make_dataset(val_n, VAL_SEED)
    q = evaluate_model(model, arch, images, masks, labels, MEAN, STD)
    hp = hist["hparams"]
    training = {"steps": hist["steps_done"], "batch_size": hp["batch_size"], "seed": seed,
                "seconds": round(hist["seconds"], 1), "val_accuracy": round(q["accuracy"], 4)}
    meta = metadata(name, arch, hist["config"], training)
    st, js = save_model(model, meta, out_dir)
    if verbose:
        print(json.dumps({**training, "val_seed": VAL_SEED, "val_pointing_game": round(q["pointing_game"], 4),
                          "val_auroc": round(q["auroc"], 4), "hparams": hp}), flush=True)
        print(f"wrote {st} ({os.path.getsize(st) / 1e6:.2f} MB) and {js}", flush=True)
    return meta


__all__ = ["MEAN", "STD", "RECIPES", "recipe", "optimizer_step", "train", "train_and_save", "batch_tensors", "metadata",
           "save_model", "load_demo"]
