"""The app in headless Chromium: upload -> first heatmap, and slider change -> new heatmap pixels on screen.

The app (``python app.py --model demo-vit``) runs in a subprocess on a free port. Times are taken in
the page: ``t0`` is the first DOM event of the user action (the file input's ``input``/``change``,
or the slider's ``input``/``keydown``), ``t1`` the second ``requestAnimationFrame`` after the new
heatmap ``<img>`` (a MutationObserver on its ``src``) has been decoded, i.e. after the frame that
shows the new pixels.
"""
from __future__ import annotations

import os
import tempfile
import time

from benchmarks.timing import load, stats

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ARM = """
() => {
  const old = window.__bench;
  if (old && old.cleanup) old.cleanup();
  const first = document.querySelector('#heatmap img');
  const b = {t0: null, t1: null, src: null, old: first ? first.src : null};
  window.__bench = b;
  const mark = () => { if (b.t0 === null) b.t0 = performance.now(); };
  const kinds = ['input', 'change', 'keydown'];
  kinds.forEach(k => document.addEventListener(k, mark, true));
  const check = () => {
    const im = document.querySelector('#heatmap img');
    if (!im || !im.src || im.src === b.old || b.src !== null) return;
    b.src = im.src;
    const done = () => requestAnimationFrame(() => requestAnimationFrame(() => { b.t1 = performance.now(); }));
    im.decode().then(done, done);
  };
  const obs = new MutationObserver(check);
  obs.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  b.cleanup = () => { obs.disconnect(); kinds.forEach(k => document.removeEventListener(k, mark, true)); };
}
"""


def unavailable() -> str | None:
    """Why the browser section cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is absent (apt-get install chromium)"
    import importlib.util
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed"
    if not os.path.exists(os.path.join(ROOT, "app.py")):
        return "app.py is absent"
    from attention.models import demo_names
    if "demo-vit" not in demo_names():
        return "assets/demo-vit.safetensors/.json are absent (python -m attention.demo train --arch demo-vit)"
    return None


def _measure(page, action, timeout_ms: int = 60_000) -> float:
    page.evaluate(_ARM)
    action()
    try:
        page.wait_for_function("() => window.__bench && window.__bench.t1 !== null && window.__bench.t0 !== null",
                               timeout=timeout_ms)
    except Exception as e:  # noqa: BLE001
        state = page.evaluate("() => JSON.stringify(window.__bench)")
        raise RuntimeError(f"no new heatmap within {timeout_ms} ms (state {state})") from e
    dt = page.evaluate("() => { const b = window.__bench; b.cleanup(); return b.t1 - b.t0; }")
    return dt / 1e3


def _wait_idle(page) -> None:
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')", timeout=120_000)


def browser(uploads: int, slider_changes: int) -> dict:
    why = unavailable()
    if why:
        return {"skipped": why}
    from attention.models.demo_source import ASSETS, read_spec
    from viz_app.testing import served_app
    out: dict = {"app": "python app.py --model demo-vit", "chromium_args": ARGS,
                 "demo_vit": {"assets": os.path.abspath(ASSETS), "training": read_spec("demo-vit").get("training")}}
    t_start = time.perf_counter()
    try:
        with served_app("--model", "demo-vit", timeout=180) as url:
            out["server_start_s"] = round(time.perf_counter() - t_start, 2)
            return _measure_in_browser(url, uploads, slider_changes, out)
    except Exception as e:  # noqa: BLE001 - report the failure, keep the other sections
        return {"skipped": f"browser measurement failed: {type(e).__name__}: {str(e)[:1500]}", **out}


def _measure_in_browser(url: str, uploads: int, slider_changes: int, out: dict) -> dict:
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from attention.demo.shapes import make_sample

    with tempfile.TemporaryDirectory(prefix="bench_upload_") as tmp, sync_playwright() as p:
        paths = []
        for i in range(uploads):
            img, _, _ = make_sample(np.random.default_rng(1000 + i), 64, i % 5)
            path = os.path.join(tmp, f"shape{i}.png")
            Image.fromarray(img).save(path)
            paths.append(path)
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = b.new_context(viewport={"width": 1480, "height": 1150})
        page = ctx.new_page()
        page.set_default_timeout(120_000)
        t = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("#input-image input[type=file]", state="attached")
        try:   # the page's load event fills the model picker; uploading before that can be lost
            page.wait_for_function("() => { const e = document.querySelector('#model input'); "
                                   "return e && e.value; }", timeout=30_000)
        except Exception:  # noqa: BLE001 - an app without the picker: go on
            pass
        _wait_idle(page)
        out["page_load_s"] = round(time.perf_counter() - t, 2)
        up = []
        for path in paths:
            up.append(_measure(page, lambda path=path: page.set_input_files("#input-image input[type=file]", path)))
            page.wait_for_selector("#predictions [data-testid=label-output-value]")
            _wait_idle(page)
        out["upload_to_first_heatmap"] = {"first_ms": round(up[0] * 1e3, 1),
                                          "later": stats(up[1:]) if len(up) > 1 else None,
                                          "note": "the first upload also loads demo-vit in the server; each "
                                                  "upload is a new image (no cache hit)"}
        n_layers = int(float(page.eval_on_selector("#layer input[type=range]", "e => e.max"))) + 1
        current = int(float(page.eval_on_selector("#layer input[type=number]", "e => e.value")))
        seq = [(current - 1 - k) % n_layers for k in range(slider_changes)]   # each differs from the last
        number = page.locator("#layer input[type=number]")
        sl = []
        for v in seq:
            def act(v=v):
                number.fill(str(v))
                number.press("Enter")
            sl.append(_measure(page, act))
            _wait_idle(page)
        out["slider_to_new_heatmap"] = {**stats(sl), "layers": n_layers, "sequence": seq,
                                        "note": "layer number typed + Enter; first visits compute rollout "
                                                "through that layer from the cached maps, later ones reuse it"}
        ctx.close()
        b.close()
    out["load"] = load()
    return out
