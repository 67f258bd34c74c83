"""Peers on the same model and the same image, in the same run, after an equality check of their output.

- timm's ``timm.utils.AttentionExtract`` (fx and hook modes): a capture peer (maps only, no logits).
- ``fast-vit-rollout`` (PyPI): attention rollout; with mean fusion and no discard it computes exactly
  our rollout (CLS row of R = Ã_L ⋯ Ã_1, Ã = (Â + I) / rowsum). Its discard is defined differently
  (after the identity and the renormalisation, over all N² entries including the CLS row, by
  quantile), so max + discard is reported as a different output, not compared for speed.
- ``daam-timm-vit`` (PyPI): DAAM, a different gradient map (value-weighted, per-block decomposition).
  Only its captured attention and logits can be equal to ours; its time is listed next to our
  gradient-weighted attention (also one forward + one backward) but it is not the same output.
- ``pytorch-grad-cam``: Grad-CAM with the library's documented ViT ``reshape_transform``; its output is
  min-max scaled and resized to the input, so ours is compared after the library's own
  ``scale_cam_image``.

Peers that hook a model keep their hooks forever (fast-vit-rollout) or need fused attention off
(all of them: with timm's default fused attention they capture nothing), so each gets its own deep
copy with ``fused_attn = False``; ours runs on the untouched model.
"""
from __future__ import annotations

import copy
import importlib.util

import numpy as np
import torch

from benchmarks.timing import interleaved, load

PEER_PACKAGES = {"fast-vit-rollout": "fast_vit_rollout", "daam-timm-vit": "daam", "grad-cam": "pytorch_grad_cam"}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def unfused_copy(model: torch.nn.Module) -> torch.nn.Module:
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = False
    return m


def _diff(a, b) -> dict:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    scale = max(np.abs(b).max(), 1e-30)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None
    return {"max_abs": float(np.abs(a - b).max()), "max_rel_to_peak": float(np.abs(a - b).max() / scale),
            "pearson_r": None if corr is None else round(corr, 6)}


def peers(model: torch.nn.Module, name: str, rounds: int, rollout_rounds: int) -> dict:
    from attention import capture
    from attention.methods import rollout
    from attention.methods.grad_rollout import grad_rollout
    from attention.methods.gradcam import gradcam

    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    ours_res = capture(model, x)
    ours_maps = [m.weights for m in ours_res.maps]
    target = int(ours_res.logits.argmax())
    gh, gw = ours_res.tokens.grid
    rows = []

    # -------------------------------------------------------------- timm AttentionExtract
    from timm.utils import AttentionExtract
    for method in ("hook", "fx"):
        row = {"peer": f"timm.utils.AttentionExtract(method='{method}')", "task": "capture every attention map"}
        try:
            ae = AttentionExtract(unfused_copy(model), method=method)
            with torch.no_grad():
                got = list(ae(x).values())
            d = _diff(torch.stack(got).numpy(), torch.stack(ours_maps).numpy()) if len(got) == len(ours_maps) \
                else {"max_abs": None}
            row["check"] = {"layers": len(got), **d}
            row["same_output"] = d["max_abs"] is not None and d["max_abs"] < 1e-5

            def peer(ae=ae):
                with torch.no_grad():
                    ae(x)
            row.update(interleaved({"peer": peer, "ours": lambda: capture(model, x)}, base="peer", rounds=rounds))
            row["note"] = ("returns the maps only (no logits); needs fused attention off (with timm's default it "
                           "returns {} in hook mode / raises in fx mode)" +
                           ("; fx mode prunes the graph after the last softmax (skips the last MLP and the head)"
                            if method == "fx" else ""))
        except Exception as e:  # noqa: BLE001
            row["skipped"] = f"{type(e).__name__}: {e}"
        rows.append(row)

    # -------------------------------------------------------------- fast-vit-rollout
    if installed("fast_vit_rollout"):
        from fast_vit_rollout import ViTAttentionRollout
        peer_model = unfused_copy(model)
        fvr = ViTAttentionRollout(peer_model, head_fusion="mean", discard_ratio=0.0)
        R = fvr(x)
        peer_map = R[0, 0, 1:].reshape(gh, gw).numpy()
        ours_map = rollout(ours_res)[0].numpy()
        d = _diff(ours_map, peer_map)
        same = d["max_rel_to_peak"] < 1e-4
        row = {"peer": "fast-vit-rollout ViTAttentionRollout(head_fusion='mean', discard_ratio=0)",
               "task": "rollout map, forward included", "check": d, "same_output": same,
               **interleaved({"peer": lambda: fvr(x), "ours": lambda: rollout(capture(model, x))}, base="peer",
                             rounds=rounds),
               "note": "the peer needs fused attention off (with timm's default it raises 'No attention maps were "
                       "captured'); its hooks stay on the model"}
        rows.append(row)
        attn = list(fvr.attentions)

        def peer_rollout_only():
            fvr.attentions = attn
            return fvr._compute_rollout()
        rows.append({"peer": "fast-vit-rollout ViTAttentionRollout._compute_rollout (mean, discard 0)",
                     "task": "rollout map from maps already captured (no forward)", "check": d, "same_output": same,
                     **interleaved({"peer": peer_rollout_only, "ours": lambda: rollout(ours_res)}, base="peer",
                                   rounds=rollout_rounds, warmup=3),
                     "note": "peer: full (N x N) matrix products per layer, O(L N^3); ours: one row vector, O(L N^2)"})
        fvr_max = ViTAttentionRollout(unfused_copy(model), head_fusion="max", discard_ratio=0.9)
        peer_max = fvr_max(x)[0, 0, 1:].reshape(gh, gw).numpy()
        ours_max = rollout(ours_res, head_fusion="max", discard_ratio=0.9)[0].numpy()
        rows.append({"peer": "fast-vit-rollout (head_fusion='max', discard_ratio=0.9)",
                     "task": "rollout with discard: a different definition", "check": _diff(ours_max, peer_max),
                     "same_output": False,
                     "note": "not the same output, so no speed comparison: the peer zeroes entries below the 90% "
                             "quantile AFTER adding the identity and renormalising, over all N^2 entries including "
                             "the CLS row, then renormalises again; ours (Abnar & Zuidema, as in the field notes) "
                             "zeroes the smallest 90% of the fused attention BEFORE the identity, never the CLS row"})
    else:
        rows.append({"peer": "fast-vit-rollout", "skipped": "not installed (pip install --no-deps -r "
                                                            "benchmarks/requirements.txt)"})

    # -------------------------------------------------------------- daam-timm-vit
    if installed("daam"):
        from daam import DAAM
        daam = DAAM(unfused_copy(model))
        out = daam(x, target=target)
        d_attn = _diff(torch.stack([a.detach() for a in daam._a]).numpy(), torch.stack(ours_maps).numpy())
        d_logits = _diff(out.output.numpy(), ours_res.logits.numpy())
        ours_g = grad_rollout(model, x, target)[0].numpy()
        d_map = _diff(ours_g, out.maps[0, -1].numpy())
        rows.append({"peer": "daam-timm-vit DAAM(model)(x, target)",
                     "task": "class-specific gradient map (one forward + one backward)",
                     "check": {"attention_maps": d_attn, "logits": d_logits, "map_vs_grad_rollout": d_map},
                     "same_output": False, "same_attention_and_logits": d_attn["max_abs"] < 1e-5 and
                     d_logits["max_abs"] < 1e-4,
                     **interleaved({"peer": lambda: daam(x, target=target),
                                    "ours": lambda: grad_rollout(model, x, target)}, base="peer", rounds=rounds),
                     "note": "a different map (DAAM: per-block ReLU(dY/dT_b)-weighted a_b V_b, accumulated), so the "
                             "ratio compares the cost of two one-forward-one-backward class maps, not the same output; "
                             "the captured attention and the logits are checked equal"})
        daam.close()
    else:
        rows.append({"peer": "daam-timm-vit", "skipped": "not installed (pip install --no-deps -r "
                                                         "benchmarks/requirements.txt)"})

    # -------------------------------------------------------------- pytorch-grad-cam
    if installed("pytorch_grad_cam"):
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import scale_cam_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def reshape_transform(t, h=gh, w=gw):   # the library's documented ViT transform
            r = t[:, 1:, :].reshape(t.size(0), h, w, t.size(2))
            return r.transpose(2, 3).transpose(1, 2)
        peer_model = copy.deepcopy(model)
        cam = GradCAM(model=peer_model, target_layers=[peer_model.blocks[-1].norm1],
                      reshape_transform=reshape_transform)
        targets = [ClassifierOutputTarget(target)]
        peer_cam = cam(input_tensor=x, targets=targets)
        ours_cam = gradcam(model, x, target).numpy()
        # the library: ReLU -> min-max + resize per layer -> mean over layers -> min-max again
        d = _diff(scale_cam_image(scale_cam_image(ours_cam, (x.shape[-1], x.shape[-2]))), peer_cam)
        row = {"peer": "pytorch-grad-cam GradCAM(target_layers=[blocks[-1].norm1], documented reshape_transform)",
               "task": "Grad-CAM, top class", "check": d, "same_output": d["max_abs"] < 1e-4,
               "note": "peer output is min-max scaled, resized to 224x224 and min-max scaled again; ours (patch grid, "
                       "raw values) is compared after the same two scale_cam_image calls; the peer object is built "
                       "once, ours per call"}
        row.update(interleaved({"peer": lambda: cam(input_tensor=x, targets=targets),
                                "ours": lambda: gradcam(model, x, target)}, base="peer", rounds=rounds))
        cam.activations_and_grads.release()
        rows.append(row)
    else:
        rows.append({"peer": "pytorch-grad-cam", "skipped": "not installed"})
    model.zero_grad(set_to_none=True)
    return {"model": name, "image": "torch.randn(1, 3, 224, 224), seed 5", "target_class": target,
            "threads": torch.get_num_threads(), "load": load(), "rows": rows}
