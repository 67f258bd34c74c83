"""The library-side sections of the benchmark: capture overhead, rollout, gradient-weighted attention,
rendering (library and app callbacks), memory and scaling. Each returns a JSON-able dict.

Models are timm's with random initialisation (``pretrained=False``, nothing is downloaded) and the
bundled demo models where ``assets/`` has them (else their architectures, randomly initialised).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

import numpy as np
import torch
from PIL import Image

from benchmarks.timing import interleaved, load, measure, stats, threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_ARCHS = ("demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool")


# ---------------------------------------------------------------------------- inputs and models

def photo(h: int, w: int, seed: int = 0) -> Image.Image:
    """A smooth synthetic RGB photo with a few shapes (deterministic; no data set needed)."""
    import cv2
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(min(h, w) // 12, min(h, w) // 4)),
                   tuple(int(v) for v in rng.integers(0, 256, 3)), -1, cv2.LINE_AA)
    return Image.fromarray(img)


class Models:
    """Random-init timm models built once per run (ViT-B takes seconds to build)."""

    def __init__(self):
        self._cache: dict = {}

    def timm(self, name: str, **kw) -> torch.nn.Module:
        import timm
        key = (name, tuple(sorted(kw.items())))
        if key not in self._cache:
            torch.manual_seed(0)
            self._cache[key] = timm.create_model(name, pretrained=False, **kw).eval()
        return self._cache[key]

    def demo(self, arch: str):
        """(model, input size, label): the shipped demo model where assets/ has it, else random init."""
        from attention.models import demo_names, load_model
        if arch in demo_names():
            from attention.models.demo_source import ASSETS
            lm = load_model(arch)
            size = tuple(lm.preprocess.input_size)
            where = os.path.realpath(ASSETS)
            return lm.model, size, ("bundled weights (assets/)" if where == os.path.realpath(os.path.join(ROOT, "assets"))
                                    else f"weights from {where}")
        from attention.demo.models import build_model, default_config
        torch.manual_seed(0)
        size = default_config(arch)["img_size"]
        return build_model(arch).eval(), (size, size), "random init (assets/ has none)"

    def drop(self, name: str, **kw) -> None:
        self._cache.pop((name, tuple(sorted(kw.items()))), None)


def image_tensor(size=(224, 224), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, *size, generator=g)


def fused_flags(model: torch.nn.Module) -> list[bool]:
    return [bool(m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]


def params_m(model: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


# ---------------------------------------------------------------------------- capture overhead

def capture_overhead(models: Models, names: list[str], rounds: int, demo: bool, demo_rounds: int) -> dict:
    """Forward with capture ÷ plain forward of the untouched model (timm: fused attention on)."""
    from attention import capture
    rows = []
    todo = [(n, "timm") for n in names] + ([(a, "demo") for a in DEMO_ARCHS] if demo else [])
    for name, kind in todo:
        try:
            if kind == "timm":
                model, size, weights = models.timm(name), (224, 224), "random init"
            else:
                model, size, weights = models.demo(name)
        except Exception as e:  # noqa: BLE001 - e.g. a demo architecture being edited right now
            rows.append({"model": name, "error": f"{type(e).__name__}: {e}"})
            continue
        x = image_tensor(size)
        flags_before = fused_flags(model)
        with torch.no_grad():
            plain_logits = model(x)
        res = capture(model, x)
        same = bool(torch.allclose(res.logits, plain_logits, atol=1e-4, rtol=1e-4))
        assert fused_flags(model) == flags_before, "capture must leave the model as found"

        def plain():
            with torch.no_grad():
                model(x)
        sides = {"plain": plain}
        if flags_before:   # the same model with fused attention off and no hooks: what the capture runs
            import copy
            unfused = copy.deepcopy(model)
            for mod in unfused.modules():
                if hasattr(mod, "fused_attn"):
                    mod.fused_attn = False

            def plain_unfused():
                with torch.no_grad():
                    unfused(x)
            sides["plain_unfused"] = plain_unfused
        sides.update({"capture": lambda: capture(model, x),
                      "capture_fp16": lambda: capture(model, x, dtype=torch.float16)})
        cmp = interleaved(sides, base="plain", rounds=rounds if kind == "timm" else demo_rounds)
        rows.append({"model": name, "weights": weights, "input": list(size), "params_m": params_m(model),
                     "layers_captured": len(res.maps), "maps_bytes_fp32": res.nbytes(),
                     "fused_attn_on_in_plain": (all(flags_before) if flags_before else None),
                     "logits_equal_plain": same, **cmp})
    return {"what": "capture(model, x) and capture(..., dtype=float16) vs `with torch.no_grad(): model(x)` on the "
                    "same untouched model (timm: fused attention on), batch 1; `plain_unfused` is a copy of the "
                    "model with fused attention off and no hooks (the attention path the capture runs)",
            "rows": rows}


# ---------------------------------------------------------------------------- rollout

def rollout_times(models: Models, name: str, repeat: int, one_thread: bool) -> dict:
    """Rollout from an existing capture (the map alone, no forward), float32 and float16 maps."""
    from attention import capture
    from attention.methods import rollout
    model = models.timm(name)
    x = image_tensor()
    rows = []
    configs = [("mean", 0.0), ("max", 0.9)]
    for dtype in (torch.float32, torch.float16):
        res = capture(model, x, dtype=dtype)
        for fusion, discard in configs:
            fn = (lambda r=res, f=fusion, d=discard: rollout(r, head_fusion=f, discard_ratio=d))
            row = {"maps_dtype": str(dtype).replace("torch.", ""), "head_fusion": fusion, "discard_ratio": discard,
                   "threads": torch.get_num_threads(), "load": load(), **measure(fn, repeat=repeat, warmup=3)}
            rows.append(row)
            if one_thread and torch.get_num_threads() != 1:
                with threads(1):
                    rows.append({**row, "threads": 1, "load": load(), **measure(fn, repeat=repeat, warmup=3)})
    return {"model": name, "tokens": 197, "what": "rollout(result, head_fusion, discard_ratio) on a finished capture "
                                                  "(map only; the forward is not included)", "rows": rows}


# ---------------------------------------------------------------------------- gradient-weighted attention

def gradient(models: Models, name: str, rounds: int) -> dict:
    """grad_rollout (capture with graph + one backward to the maps) vs a plain forward + backward."""
    from attention.methods.grad_rollout import grad_rollout
    model = models.timm(name)
    x = image_tensor()
    with torch.no_grad():
        target = int(model(x).argmax())

    def plain_to_input():
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            y = model(xg)[0, target]
            torch.autograd.grad(y, xg)

    def plain_params():
        with torch.enable_grad():
            model(x)[0, target].backward()
        model.zero_grad(set_to_none=True)

    cmp = interleaved({"plain_fwd_bwd_input": plain_to_input, "plain_fwd_bwd_params": plain_params,
                       "grad_rollout": lambda: grad_rollout(model, x, target)},
                      base="plain_fwd_bwd_input", rounds=rounds)
    return {"model": name, "target_class": target, "fused_attn_on_in_plain": all(fused_flags(model)),
            "what": "grad_rollout(model, x, target) vs the untouched model's forward + backward of the same logit, "
                    "(a) to the input image (no parameter gradients: the tight baseline) and (b) loss.backward() "
                    "into every parameter", **cmp}


# ---------------------------------------------------------------------------- rendering

def rendering(models: Models, name: str, repeat: int, app_rounds: int) -> dict:
    """overlay at 224, the layer x head grid sheet, and the app's re-render callbacks (no browser)."""
    from timm.data import resolve_data_config

    from attention import capture
    from attention.methods import rollout
    from attention.methods.raw import raw_cls_maps
    from attention.preprocess import Preprocessor
    from attention.render import grid_sheet, overlay

    model = models.timm(name)
    pre = Preprocessor.from_timm_config(resolve_data_config({}, model=model))
    out: dict = {"model": name, "rows": []}
    p224 = photo(224, 224, seed=1)
    prepared = pre(p224)
    res = capture(model, prepared.tensor)
    heat = rollout(res)[0].numpy()
    maps = raw_cls_maps(res)[0].numpy()                       # (12, 12, 14, 14)
    arr224 = np.asarray(p224)
    out["rows"].append({"what": "overlay, 224x224 photo, smooth", "threads": torch.get_num_threads(),
                        **measure(lambda: overlay(arr224, heat, prepared.geometry), repeat)})
    out["rows"].append({"what": "overlay, 224x224 photo, blocky + 60% mass + contour",
                        "threads": torch.get_num_threads(),
                        **measure(lambda: overlay(arr224, heat, prepared.geometry, mode="blocky", mass_threshold=0.6,
                                                  contour=True), repeat)})
    p640 = photo(480, 640, seed=2)
    prep640 = pre(p640)
    arr640 = np.asarray(p640)
    out["rows"].append({"what": "overlay, 640x480 photo (the app's display size), smooth",
                        "threads": torch.get_num_threads(),
                        **measure(lambda: overlay(arr640, heat, prep640.geometry), repeat)})
    sheet_repeat = max(3, repeat // 4)
    out["rows"].append({"what": f"grid_sheet {maps.shape[0]} layers x {maps.shape[1]} heads + mean, 96 px cells, "
                                f"224x224 photo", "threads": torch.get_num_threads(),
                        **measure(lambda: grid_sheet(arr224, maps, prepared.geometry), sheet_repeat, warmup=1)})
    out["rows"].append({"what": f"grid_sheet {maps.shape[0]} x {maps.shape[1]}, 640x480 photo",
                        "threads": torch.get_num_threads(),
                        **measure(lambda: grid_sheet(arr640, maps, prep640.geometry), sheet_repeat, warmup=1)})
    out["app"] = app_rerender(model, name, pre, app_rounds)
    return out


def _manager_for(model: torch.nn.Module, name: str, pre):
    """A viz_app ModelManager that serves our already built model (no second ViT-B, no download)."""
    from attention.models import LoadedModel
    from attention.models.labels import class_names_for
    from viz_app.models import ModelManager

    def loader(arch, checkpoint=None, labels=None, pretrained=False):
        return LoadedModel(arch, model, pre, class_names_for(model.num_classes, None), "timm", {"weights": "random"})
    return ModelManager(pretrained=False, loader=loader)


def app_rerender(model: torch.nn.Module, name: str, pre, rounds: int) -> dict:
    """`viz_app.callbacks.Callbacks.render` called directly on a cached analysis (what a control change runs)."""
    try:
        from viz_app.callbacks import Callbacks
    except Exception as e:  # noqa: BLE001 - the app is being written; report, don't fail
        return {"skipped": f"viz_app cannot be imported: {type(e).__name__}: {e}"}
    cb = Callbacks(manager=_manager_for(model, name, pre))
    session = "bench"
    img = photo(480, 640, seed=3)
    t0 = time.perf_counter()
    a = cb.analyse(session, img, name)
    analyse_s = time.perf_counter() - t0
    view = cb.default_view(a)
    n_layers = cb.controls(a, view)["num_layers"]
    cb.render(session, name, a.image_sha, view)        # warm-up: the default view as after upload
    rows = []
    # 1. layer slider: every layer once (rollout through that layer is computed from the cached maps)
    first = []
    for layer in list(range(n_layers - 2, -1, -1)):
        v = view.with_(layer=layer)
        t = time.perf_counter()
        cb.render(session, name, a.image_sha, v)
        first.append(time.perf_counter() - t)
    rows.append({"what": "layer slider: a layer not shown before (rollout through it from the cached maps + overlay)",
                 **stats(first)})
    # 2. the same layers again (map cached: overlay only)
    again = []
    for _ in range(max(1, rounds // n_layers + 1)):
        for layer in range(n_layers):
            v = view.with_(layer=layer)
            t = time.perf_counter()
            cb.render(session, name, a.image_sha, v)
            again.append(time.perf_counter() - t)
    rows.append({"what": "layer slider back to a layer already shown (map cached: overlay only)", **stats(again)})
    # 3. raw attention, head changes
    heads = []
    for h in range(len(cb.controls(a, view)["heads"]) - 3):
        v = view.with_(method="raw", head=str(h))
        t = time.perf_counter()
        cb.render(session, name, a.image_sha, v)
        heads.append(time.perf_counter() - t)
    rows.append({"what": "raw attention, head change (last layer, CLS query)", **stats(heads)})
    # 4. colour map / opacity change on the rollout view
    cmaps = []
    for i in range(rounds):
        v = view.with_(cmap=("viridis", "inferno", "jet")[i % 3], alpha=0.3 + 0.05 * (i % 8))
        t = time.perf_counter()
        cb.render(session, name, a.image_sha, v)
        cmaps.append(time.perf_counter() - t)
    rows.append({"what": "colour map / opacity change (map cached)", **stats(cmaps)})
    return {"model": name, "photo": [640, 480], "display": list(a.display.shape[:2][::-1]),
            "analyse_upload_ms": round(analyse_s * 1e3, 1), "threads": torch.get_num_threads(), "load": load(),
            "rows": rows}


# ---------------------------------------------------------------------------- memory

def cached_bytes(models: Models, name: str, photo_sizes: list[tuple[int, int]]) -> dict:
    """Bytes the app's cache holds per analysed image (float16 maps), by component."""
    from timm.data import resolve_data_config

    from attention.preprocess import Preprocessor
    try:
        from viz_app.callbacks import Callbacks
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"viz_app cannot be imported: {type(e).__name__}: {e}"}
    model = models.timm(name)
    pre = Preprocessor.from_timm_config(resolve_data_config({}, model=model))
    cb = Callbacks(manager=_manager_for(model, name, pre))
    rows = []
    for i, (w, h) in enumerate(photo_sizes):
        a = cb.analyse(f"mem{i}", photo(h, w, seed=10 + i), name)
        before = a.nbytes()
        view = cb.default_view(a)
        for layer in range(len(a.result.maps)):
            cb.render(f"mem{i}", name, a.image_sha, view.with_(layer=layer))
        rows.append({"photo": [w, h], "display": list(a.display.shape[:2][::-1]),
                     "maps_dtype": str(a.result.maps[0].weights.dtype).replace("torch.", ""),
                     "attention_maps": a.result.nbytes(), "input_tensor": int(a.prepared.tensor.nelement() * 4),
                     "display_copy": int(a.display.nbytes), "photo_bytes": a.photo.width * a.photo.height * 3,
                     "total_after_analyse": before, "total_after_all_layers_viewed": a.nbytes(),
                     "store_bytes": cb.store.stats()["bytes"]})
    return {"model": name, "what": "viz_app Analysis.nbytes() after Callbacks.analyse (capture with float16 maps), "
                                   "and after the rollout view of every layer was rendered", "rows": rows}


_RSS_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "wall_s": time.perf_counter() - t,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "stderr": p.stderr[-1500:]}))
"""


def child_rss(cmd: list[str], timeout: float) -> dict:
    """Run `cmd` as the only child of a fresh wrapper and read its peak RSS (RUSAGE_CHILDREN)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0 or not p.stdout.strip():
        return {"rc": p.returncode, "error": (p.stderr or p.stdout)[-1500:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def export_rss(model: str, counts: list[int], threads_n: int, timeout: float = 900, baseline: bool = True) -> dict:
    """Peak RSS of `python -m attention export --random-init` on 1 and on N images (subprocess), and (baseline)
    of a process that only imports what the CLI imports."""
    rows = []
    base = {} if not baseline else child_rss([sys.executable, "-c", "import timm, attention.cli, attention.export, attention.methods, "
                                            "attention.models, attention.render"], timeout)
    if "maxrss_kb" in base:
        rows.append({"images": 0, "what": "imports only (torch, timm, attention)", "rc": base["rc"],
                     "peak_rss_mb": round(base["maxrss_kb"] / 1024, 1), "wall_s": round(base["wall_s"], 2),
                     "output_mb": 0.0})
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        imgs = []
        for i in range(max(counts)):
            path = os.path.join(tmp, f"img{i:03d}.jpg")
            photo(480, 640, seed=100 + i).save(path, quality=90)
            imgs.append(path)
        for n in counts:
            out = os.path.join(tmp, f"out{n}")
            cmd = [sys.executable, "-c", f"import torch; torch.set_num_threads({threads_n}); import runpy, sys; "
                                         f"sys.argv = ['attention'] + sys.argv[1:]; "
                                         f"runpy.run_module('attention', run_name='__main__')",
                   "export", "--model", model, "--random-init", "--quiet", "--out", out, *imgs[:n]]
            r = child_rss(cmd, timeout)
            size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) if os.path.isdir(out) else 0
            rows.append({"images": n, "rc": r.get("rc"), "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1)
                         if "maxrss_kb" in r else None, "wall_s": round(r.get("wall_s", float("nan")), 2),
                         "output_mb": round(size / 1e6, 1), **({"error": r["error"]} if "error" in r else {}),
                         **({"stderr": r["stderr"]} if r.get("rc") else {})})
    runs = [r for r in rows if r["images"] and r.get("peak_rss_mb")]
    if len(runs) >= 2:
        per = (runs[-1]["wall_s"] - runs[0]["wall_s"]) / max(1, runs[-1]["images"] - runs[0]["images"])
        growth = round(runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"], 1)
    else:
        per, growth = None, None
    return {"model": model, "command": f"python -m attention export --model {model} --random-init --out DIR "
                                       f"IMG... (640x480 JPEGs; torch threads {threads_n})",
            "rows": rows, "seconds_per_extra_image": None if per is None else round(per, 3),
            "rss_growth_mb_first_to_last": growth}


# ---------------------------------------------------------------------------- scaling

_RSS_ONE = r"""
import gc, sys, torch, timm
torch.set_num_threads(int(sys.argv[4]))
from attention import capture

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))

m = timm.create_model(sys.argv[1], pretrained=False, dynamic_img_size=True).eval()
x = torch.randn(1, 3, int(sys.argv[2]), int(sys.argv[2]))
with torch.no_grad():
    m(x)                                      # warm-up: allocator and kernels, as in a long-running app
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                              # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
with torch.no_grad():
    if sys.argv[3] == "plain":
        out = m(x)
    else:
        out = capture(m, x, dtype=torch.float16 if sys.argv[3] == "capture_fp16" else None)
print(before, status("VmHWM"))
"""


def _peak_rss(name: str, size: int, mode: str, threads_n: int) -> Optional[dict]:
    """Peak RSS increase of ONE call (plain forward or capture) in a fresh process, after the model is built and
    warmed up (Linux: /proc/self/clear_refs resets the peak, so the parent's RSS inherited through fork does not
    count)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", _RSS_ONE, name, str(size), mode, str(threads_n)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return {"error": p.stderr[-500:]}
    before, peak = (int(v) for v in p.stdout.split()[-2:])
    return {"rss_before_mb": round(before / 1024, 1), "peak_mb": round(peak / 1024, 1),
            "peak_increase_mb": round((peak - before) / 1024, 1)}


def scaling(models: Models, name: str, sizes: list[int], rounds: int, rss: bool, by_model: list[str],
            model_rounds: int) -> dict:
    """Time and memory against input size (dynamic_img_size=True) and against model size."""
    from attention import capture
    from attention.methods import rollout
    rows = []
    model = models.timm(name, dynamic_img_size=True)
    for s in sizes:
        x = image_tensor((s, s))
        res = capture(model, x)
        n_tok = res.maps[0].weights.shape[-1]

        def plain():
            with torch.no_grad():
                model(x)
        cmp = interleaved({"plain": plain, "capture": lambda: capture(model, x)}, base="plain", rounds=rounds)
        ro = measure(lambda: rollout(res), repeat=max(5, rounds * 2), warmup=1)
        row = {"input": s, "tokens": n_tok, "grid": list(res.tokens.grid), "maps_bytes_fp32": res.nbytes(),
               "maps_bytes_fp16": res.nbytes() // 2, "plain_ms": cmp["sides"]["plain"],
               "capture_ms": cmp["sides"]["capture"], "capture_over_plain": cmp["ratio_to_plain"]["capture"],
               "rollout_ms": ro, "load": load()}
        del res
        if rss:
            row["peak_rss_plain"] = _peak_rss(name, s, "plain", torch.get_num_threads())
            row["peak_rss_capture_fp32"] = _peak_rss(name, s, "capture", torch.get_num_threads())
            row["peak_rss_capture_fp16"] = _peak_rss(name, s, "capture_fp16", torch.get_num_threads())
        rows.append(row)
    models.drop(name, dynamic_img_size=True)
    by = []
    for mname in by_model:
        m = models.timm(mname)
        x = image_tensor()
        res = capture(m, x)

        def plain_m(m=m, x=x):
            with torch.no_grad():
                m(x)
        cmp = interleaved({"plain": plain_m, "capture": lambda m=m, x=x: capture(m, x)}, base="plain",
                          rounds=model_rounds)
        by.append({"model": mname, "params_m": params_m(m), "layers": len(res.maps),
                   "heads": res.maps[0].num_heads, "dim": int(getattr(m, "embed_dim", 0)),
                   "maps_bytes_fp32": res.nbytes(), "plain_ms": cmp["sides"]["plain"],
                   "capture_ms": cmp["sides"]["capture"],
                   "rollout_ms": measure(lambda r=res: rollout(r), repeat=15, warmup=2), "load": load()})
    return {"model": name, "by_input_size": rows, "by_model_size": by,
            "complexity": "tokens N = (H/16)(W/16) + 1. Forward: O(L (N D^2 + N^2 D)); the N^2 attention term grows "
                          "fastest. Captured maps: L*H*N^2 values (bytes ~ N^2: 224->384->512 is 197->577->1025 "
                          "tokens, x8.6 and x27 the bytes of 224). Rollout pushes one row vector through the "
                          "layers: O(L H N^2) to fuse heads + O(L N^2) to propagate (a full matrix product "
                          "would be O(L N^3))."}


# ---------------------------------------------------------------------------- threads

def thread_check(models: Models, name: str = "vit_tiny_patch16_224", rounds: int = 8) -> dict:
    """The same forward and rollout at 1 and at 2 threads, interleaved: shows whether the machine can give
    this process two cores at once right now (on a shared, loaded machine it cannot, and 2 threads lose)."""
    from attention import capture
    from attention.methods import rollout
    model = models.timm(name)
    x = image_tensor()
    res = capture(model, x)

    def fwd(n):
        def f():
            with threads(n), torch.no_grad():
                model(x)
        return f

    def ro(n):
        def f():
            with threads(n):
                rollout(res)
        return f
    return {"model": name, "forward": interleaved({"1_thread": fwd(1), "2_threads": fwd(2)}, base="1_thread",
                                                  rounds=rounds),
            "rollout": interleaved({"1_thread": ro(1), "2_threads": ro(2)}, base="1_thread", rounds=rounds * 3)}
