"""Targets (met / missed) and the markdown tables (benchmarks/RESULTS.md, pasted into the README)."""
from __future__ import annotations

from typing import Optional


def _t(ms: Optional[dict]) -> str:
    if not ms:
        return "–"
    return f"{ms['median_ms']:.1f} ({ms['min_ms']:.1f}–{ms['max_ms']:.1f})"


def _r(r: Optional[dict]) -> str:
    if not r:
        return "–"
    return f"{r['median']:.3f} ({r['min']:.2f}–{r['max']:.2f})"


def _mb(b) -> str:
    return "–" if b is None else f"{b / 1e6:.2f} MB"


def target(name: str, value, limit, unit: str, met: Optional[bool], note: str = "") -> dict:
    return {"target": name, "value": value, "limit": limit, "unit": unit,
            "met": met, "verdict": "n/a" if met is None else ("met" if met else "missed"), "note": note}


def targets(res: dict) -> list[dict]:
    out = []
    cap = res.get("capture_overhead", {})
    for row in cap.get("rows", []):
        if row.get("weights") != "random init":
            continue
        for side in ("capture", "capture_fp16"):
            r = row["ratio_to_plain"][side]["median"]
            out.append(target(f"capture overhead {row['model']} ({side.replace('capture_', '') if '_' in side else 'fp32'})",
                              r, 1.05, "x plain fused forward", r <= 1.05))
    ro = res.get("rollout", {})
    thr = res.get("machine", {}).get("torch_threads")
    for row in ro.get("rows", []):
        limit = 3.0 if row["head_fusion"] == "mean" else 8.0
        label = "mean" if row["head_fusion"] == "mean" else f"max + discard {row['discard_ratio']}"
        out.append(target(f"rollout {ro['model']} {label}, {row['maps_dtype']} maps, {row['threads']} thread(s)",
                          row["median_ms"], limit, "ms", row["median_ms"] <= limit,
                          "" if row["threads"] == thr else "extra row: see the note on threads"))
    g = res.get("gradient", {})
    if g.get("ratio_to_plain_fwd_bwd_input"):
        r = g["ratio_to_plain_fwd_bwd_input"]["grad_rollout"]["median"]
        out.append(target(f"grad_rollout {g['model']} / plain forward+backward (to the input)", r, 1.15, "x", r <= 1.15))
        r2 = g["ratio_to_plain_fwd_bwd_input"]["plain_fwd_bwd_params"]["median"]
        out.append(target("(reference) plain backward into all parameters / to the input", r2, None, "x", None))
    rend = res.get("rendering", {})
    for row in rend.get("rows", []):
        if row["what"].startswith("overlay, 224x224 photo, smooth"):
            out.append(target("overlay at 224", row["median_ms"], 15.0, "ms", row["median_ms"] <= 15.0))
        if row["what"].startswith("grid_sheet") and "224x224" in row["what"]:
            out.append(target("grid sheet 12x12 (+ mean column)", row["median_ms"], 400.0, "ms",
                              row["median_ms"] <= 400.0))
    app = rend.get("app", {})
    for row in app.get("rows", []):
        out.append(target(f"app re-render from cache: {row['what']}", row["median_ms"], 50.0, "ms",
                          row["median_ms"] <= 50.0))
    br = res.get("browser", {})
    if "slider_to_new_heatmap" in br:
        v = br["slider_to_new_heatmap"]["median_ms"]
        out.append(target("browser: slider change -> new heatmap on screen", v, 250.0, "ms", v <= 250.0))
        up = br["upload_to_first_heatmap"]
        out.append(target("browser: upload -> first heatmap (demo-vit, first upload)", up["first_ms"], None, "ms", None))
    else:
        out.append(target("browser: slider change -> new heatmap on screen", None, 250.0, "ms", None,
                          br.get("skipped", "not run")))
    mem = res.get("memory", {}).get("cached_per_image", {})
    for row in mem.get("rows", []):
        v = row["total_after_analyse"] / 1e6
        out.append(target(f"bytes cached per image {mem['model']} float16, {row['photo'][0]}x{row['photo'][1]} photo",
                          round(v, 2), 12.0, "MB", v <= 12.0,
                          f"attention maps alone {row['attention_maps'] / 1e6:.2f} MB"))
    peers = res.get("peers", {})
    rollout_peer = None
    for row in peers.get("rows", []):
        if "ratio_to_peer" not in row:
            continue
        r = row["ratio_to_peer"]["ours"]["median"]
        if row.get("same_output"):
            out.append(target(f"ours / {row['peer']} [{row['task']}]", r, 1.0, "x", r <= 1.0))
            if row["task"].startswith("rollout map from maps"):
                rollout_peer = r
        else:
            out.append(target(f"ours / {row['peer']} [{row['task']}] (different output)", r, None, "x", None))
    if rollout_peer is not None:
        out.append(target("rollout at least 2x faster than the fastest peer (ours / peer <= 0.5)", rollout_peer, 0.5,
                          "x", rollout_peer <= 0.5))
    return out


def markdown(res: dict) -> str:
    res = {k: v for k, v in res.items()}
    errors = [f"- section `{k}` failed: {v['error']}" for k, v in res.items() if isinstance(v, dict) and "error" in v]
    for k in [k for k, v in res.items() if isinstance(v, dict) and "error" in v]:
        del res[k]
    m = res["machine"]
    L = [f"# Benchmark results{' (--quick)' if res['config']['quick'] else ''}", "",
         f"Machine: **{m['cpu']}**, {m['usable_cores']} usable cores ({m['logical_cores']} logical), "
         f"{m['memory_gib']} GiB RAM; torch {m['torch']} with **{m['torch_threads']} thread{'s' if m['torch_threads'] != 1 else ''}**, timm {m['timm']}, "
         f"numpy {m['numpy']}, Python {m['python']}. CPU only, random-init models (nothing downloaded). "
         f"Load average at start {m['load_at_start']}, at end {res.get('load_at_end')} (other jobs shared the "
         f"machine; times are wall clock, median (min–max); ratios are medians of per-round ratios of "
         f"interleaved runs). Generated by `python benchmarks/run.py{' --quick' if res['config']['quick'] else ''}` "
         f"in {res.get('total_s', 0):.0f} s.", ""]
    tc = res.get("thread_check")
    if tc and "forward" in tc:
        f, r = tc["forward"], tc["rollout"]
        L += [f"Thread check ({tc['model']}, interleaved, same run): forward {_t(f['sides']['1_thread'])} ms at 1 thread "
              f"vs {_t(f['sides']['2_threads'])} ms at 2 threads; rollout {_t(r['sides']['1_thread'])} vs "
              f"{_t(r['sides']['2_threads'])} ms.", ""]
    tg = res.get("targets", [])
    if tg:
        L += ["## Targets", "", "| target | value | limit | verdict |", "|---|---|---|---|"]
        for t in tg:
            v = "–" if t["value"] is None else (f"{t['value']:.3f}" if isinstance(t["value"], float) else str(t["value"]))
            lim = "–" if t["limit"] is None else f"≤ {t['limit']}"
            note = f" ({t['note']})" if t.get("note") else ""
            L.append(f"| {t['target']} | {v} {t['unit']} | {lim} | **{t['verdict']}**{note} |")
        L.append("")
    cap = res.get("capture_overhead")
    if cap:
        L += ["## Capture overhead", "", cap["what"] + ".", "",
              "| model | weights | input | layers | plain ms | capture ms | unfused, no hooks ÷ plain | capture ÷ plain "
              "| fp16 capture ÷ plain |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in cap["rows"]:
            if "error" in r:
                L.append(f"| {r['model']} | error: {r['error']} | | | | | | | |")
                continue
            L.append(f"| {r['model']} | {r['weights']} | {r['input'][0]}×{r['input'][1]} | {r['layers_captured']} | "
                     f"{_t(r['sides']['plain'])} | {_t(r['sides']['capture'])} | "
                     f"{_r(r['ratio_to_plain'].get('plain_unfused'))} | {_r(r['ratio_to_plain']['capture'])} "
                     f"| {_r(r['ratio_to_plain']['capture_fp16'])} |")
        L.append("")
    ro = res.get("rollout")
    if ro:
        L += [f"## Rollout ({ro['model']}, {ro['tokens']} tokens, map only)", "",
              "| maps | fusion | discard | threads | ms |", "|---|---|---|---|---|"]
        for r in ro["rows"]:
            L.append(f"| {r['maps_dtype']} | {r['head_fusion']} | {r['discard_ratio']} | {r['threads']} | {_t(r)} |")
        L.append("")
    g = res.get("gradient")
    if g and "sides" in g:
        L += [f"## Gradient-weighted attention ({g['model']})", "", "| | ms | ÷ plain fwd+bwd to input |",
              "|---|---|---|"]
        for k, v in g["sides"].items():
            ratio = g["ratio_to_plain_fwd_bwd_input"].get(k)
            L.append(f"| {k} | {_t(v)} | {_r(ratio) if ratio else '1'} |")
        L.append("")
    rend = res.get("rendering")
    if rend:
        L += ["## Rendering", "", "| what | ms |", "|---|---|"]
        for r in rend["rows"]:
            L.append(f"| {r['what']} | {_t(r)} |")
        app = rend.get("app", {})
        if "rows" in app:
            L.append(f"| app: upload analysis (`Callbacks.analyse`, {app['model']}, 640×480 photo) | "
                     f"{app['analyse_upload_ms']} |")
            for r in app["rows"]:
                L.append(f"| app `Callbacks.render`: {r['what']} | {_t(r)} |")
        elif app:
            L.append(f"| app re-render | skipped: {app.get('skipped')} |")
        L.append("")
    br = res.get("browser")
    if br:
        L += ["## In Chromium", ""]
        if "slider_to_new_heatmap" in br:
            up = br["upload_to_first_heatmap"]
            L += ["| what | ms |", "|---|---|",
                  f"| server start (`python app.py --model demo-vit`) | {br['server_start_s'] * 1e3:.0f} |",
                  f"| upload → first heatmap, first upload (loads the model) | {up['first_ms']:.0f} |",
                  f"| upload → first heatmap, later uploads | {_t(up['later'])} |",
                  f"| slider change → new heatmap on screen | {_t(br['slider_to_new_heatmap'])} |", ""]
        else:
            L += [f"Skipped: {br.get('skipped')}", ""]
    mem = res.get("memory", {})
    c = mem.get("cached_per_image", {})
    if c.get("rows"):
        L += ["## Memory", "", f"Bytes in the app's cache per analysed image ({c['model']}, float16 maps):", "",
              "| photo | attention maps | input tensor | display copy | photo | total | after every layer viewed |",
              "|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            L.append(f"| {r['photo'][0]}×{r['photo'][1]} | {_mb(r['attention_maps'])} | {_mb(r['input_tensor'])} | "
                     f"{_mb(r['display_copy'])} | {_mb(r['photo_bytes'])} | **{_mb(r['total_after_analyse'])}** | "
                     f"{_mb(r['total_after_all_layers_viewed'])} |")
        L.append("")
    e = mem.get("export_rss", {})
    if e.get("rows"):
        L += [f"CLI export peak RSS (`{e['command']}`):", "", "| images | peak RSS | wall | output |", "|---|---|---|---|"]
        for r in e["rows"]:
            L.append(f"| {r.get('what', r['images'])} | {r['peak_rss_mb']} MB | {r['wall_s']} s | {r['output_mb']} MB |")
        L.append("")
    sc = res.get("scaling")
    if sc:
        L += ["## Scaling", "", f"Input size ({sc['model']}, `dynamic_img_size=True`):", "",
              "| input | tokens | maps fp32 | plain ms | capture ms | capture ÷ plain | rollout ms | peak RSS increase of one call: plain / capture fp32 / fp16 |",
              "|---|---|---|---|---|---|---|---|"]
        for r in sc["by_input_size"]:
            rss = "–"
            keys = ("peak_rss_plain", "peak_rss_capture_fp32", "peak_rss_capture_fp16")
            if all((r.get(k) or {}).get("peak_increase_mb") is not None for k in keys):
                rss = " / ".join(f"+{r[k]['peak_increase_mb']:.0f}" for k in keys) + " MB"
            L.append(f"| {r['input']} | {r['tokens']} | {_mb(r['maps_bytes_fp32'])} | {_t(r['plain_ms'])} | "
                     f"{_t(r['capture_ms'])} | {_r(r['capture_over_plain'])} | {_t(r['rollout_ms'])} | {rss} |")
        L += ["", "Model size (224):", "", "| model | params | layers × heads | maps fp32 | plain ms | capture ms | rollout ms |",
              "|---|---|---|---|---|---|---|"]
        for r in sc["by_model_size"]:
            L.append(f"| {r['model']} | {r['params_m']} M | {r['layers']} × {r['heads']} | {_mb(r['maps_bytes_fp32'])} | "
                     f"{_t(r['plain_ms'])} | {_t(r['capture_ms'])} | {_t(r['rollout_ms'])} |")
        L += ["", sc["complexity"], ""]
    pe = res.get("peers")
    if pe:
        L += [f"## Peers ({pe['model']}, same image, same run)", "",
              "| peer | task | same output? (check) | peer ms | ours ms | ours ÷ peer |", "|---|---|---|---|---|---|"]
        for r in pe["rows"]:
            if "skipped" in r:
                L.append(f"| {r['peer']} | | skipped: {r['skipped']} | | | |")
                continue
            chk = r.get("check", {})
            if "attention_maps" in chk:
                ctext = (f"map: no (r = {chk['map_vs_grad_rollout']['pearson_r']}); attention max |Δ| "
                         f"{chk['attention_maps']['max_abs']:.1e}, logits max |Δ| {chk['logits']['max_abs']:.1e}")
            else:
                ctext = (f"{'yes' if r.get('same_output') else 'no'} (max |Δ| {chk.get('max_abs', float('nan')):.1e}"
                         + (f", r = {chk['pearson_r']}" if chk.get("pearson_r") is not None else "") + ")")
            if "sides" in r:
                L.append(f"| {r['peer']} | {r['task']} | {ctext} | {_t(r['sides']['peer'])} | {_t(r['sides']['ours'])} "
                         f"| {_r(r['ratio_to_peer']['ours'])} |")
            else:
                L.append(f"| {r['peer']} | {r['task']} | {ctext} | – | – | not comparable |")
        L.append("")
        notes = [f"- {r['peer']}: {r['note']}" for r in pe["rows"] if r.get("note")]
        L += notes + [""]
    if errors:
        L += ["## Errors", ""] + errors + [""]
    if res.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(L)
