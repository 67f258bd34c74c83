"""The app in headless Chromium: upload -> first heatmap, and slider change -> new heatmap pixels on screen.

The app (``python app.py --model demo-vit``) runs in a subprocess on a free port. Times are taken in
the page: ``t0`` is the first DOM event of the user action (the file input's ``input``/``change``,
or the slider's ``input``/``keydown``), ``t1`` the second ``requestAnimationFrame`` after the new
heatmap ``<img>`` (a MutationObserver on its ``src``) has been decoded, i.e. after the frame that
shows the new pixels.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time

from benchmarks.timing import load, stats

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    """Seconds from `action` (an upload, a typed layer) to the new heatmap's pixels on screen."""
    return click_to_pixels_once(page, "#heatmap", action, timeout_ms)


def _wait_idle(page) -> None:
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')", timeout=120_000)


@contextlib.contextmanager
def first_screen(url: str, viewport=(1280, 720), args=(), **context):
    """A Chromium page on the app at `url` with its first screen shown (the default model on an example);
    `args`: extra Chromium flags, `context`: Playwright context options (e.g. permissions)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS + list(args))
        try:
            page = b.new_context(viewport={"width": viewport[0], "height": viewport[1]}, **context).new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#heatmap img")
            _wait_idle(page)
            yield page
        finally:
            b.close()


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


# ---------------------------------------------------------------------------------------------- click -> pixels
# Any picture: t0 = the first DOM event of the user action (pointerdown, keydown, input, change), t1 = the second
# animation frame after the new picture in `selector` has been decoded (the frame that shows its pixels).
_ARM_ANY = """
(sel) => {
  const old = window.__bench;
  if (old && old.cleanup) old.cleanup();
  const first = document.querySelector(sel + ' img');
  const b = {t0: null, t1: null, src: null, old: first ? first.src : null};
  window.__bench = b;
  const mark = () => { if (b.t0 === null) b.t0 = performance.now(); };
  const kinds = ['pointerdown', 'keydown', 'input', 'change'];
  kinds.forEach(k => document.addEventListener(k, mark, true));
  const check = () => {
    const im = document.querySelector(sel + ' img');
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


class ServerLog:
    """The server's handler timings (``ATTENTION_VIZ_TIMING=1`` lines) logged since the last `take()`."""

    def __init__(self, path: str | None):
        self.path, self.pos = path, 0

    def take(self) -> float | None:
        """Milliseconds spent in handlers and PNG encoding since the previous call (None: no log)."""
        if not self.path:
            return None
        with open(self.path, encoding="utf-8", errors="replace") as f:
            f.seek(self.pos)
            text = f.read()
            self.pos = f.tell()
        import re
        return sum(float(m) for m in re.findall(r"viz_app\.timing: (?:handler|encode) .*? ([0-9.]+) ms", text))


def click_to_pixels_once(page, selector: str, action, timeout_ms: int = 60_000,
                         server: ServerLog | None = None, times: list | None = None) -> float:
    """Seconds from the user's action to the new pixels of the picture in `selector` on screen
    (with `server`: its handler time for this action is appended to `times`)."""
    if server:
        server.take()
    page.evaluate(_ARM_ANY, selector)
    action()
    try:
        page.wait_for_function("() => window.__bench && window.__bench.t1 !== null && window.__bench.t0 !== null",
                               timeout=timeout_ms)
    except Exception as e:  # noqa: BLE001
        state = page.evaluate("() => JSON.stringify(window.__bench)")
        shot = os.path.join(tempfile.gettempdir(), "click_to_pixels_failure.png")
        page.screenshot(path=shot)
        raise RuntimeError(f"no new picture in {selector} within {timeout_ms} ms (state {state}; page: {shot})") from e
    dt = page.evaluate("() => { const b = window.__bench; b.cleanup(); return b.t1 - b.t0; }")
    _wait_idle(page)
    page.wait_for_timeout(500)      # let the slider's second event (release after input) settle: not timed
    if server and times is not None:
        times.append(server.take())
    return dt / 1e3


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _click_cell(page, selector: str, grid: tuple[int, int], row: int, col: int) -> None:
    """Click the centre of cell (row, col) of a picture that shows a gh x gw patch grid (kept aspect)."""
    img = page.locator(f"{selector} img")
    img.scroll_into_view_if_needed()
    box = img.bounding_box()
    nw, nh = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    s = min(box["width"] / nw, box["height"] / nh)
    w, h = nw * s, nh * s
    x0, y0 = (box["width"] - w) / 2, (box["height"] - h) / 2
    img.click(position={"x": x0 + w * (col + 0.5) / grid[1], "y": y0 + h * (row + 0.5) / grid[0]})


def _show_part(page, label: str) -> None:
    page.locator("#learn-part").get_by_label(label, exact=True).check()
    page.wait_for_function("(p) => document.querySelector('#learn-query-pane').dataset.show === p",
                           arg=label.split()[0])


def click_to_pixels(url: str, repeats: int = 5, viewport=(1280, 720), grid=(8, 8),
                    server: ServerLog | None = None) -> list[dict]:
    """Every lesson interaction and main-view change of the app at `url`, click -> new pixels (`grid`: the
    model's patch grid; `server`: the server's log, for the server-side share of each time)."""
    import re

    rows = []
    with first_screen(url, viewport) as page:

        def row(group, label, times, srv):
            """The first action warms up (a layer's q, k, v); the statistics are over the others."""
            r = {"group": group, "interaction": label, **stats(times[1:] or times), "first_ms": round(times[0] * 1e3, 1)}
            if srv and srv[0] is not None:
                r["server_median_ms"] = round(sorted(srv[1:] or srv)[len(srv[1:] or srv) // 2], 1)
            rows.append(r)

        def run(group: str, label: str, selector: str, actions):
            srv: list = []
            times = [click_to_pixels_once(page, selector, a, server=server, times=srv) for a in actions]
            row(group, label, times, srv)

        # ------------------------------------------------------------------ main view
        run("main view", "layer slider (type + Enter)", "#heatmap",
            [lambda v=v: _set_number(page, "layer", v) for v in ([2, 1, 0, 3] * repeats)[:repeats + 1]])
        page.locator("#method").get_by_label("Raw attention").check()
        _wait_idle(page)

        heads, srv = [], []
        for h in (["head 1", "head 2", "head 3", "head 0"] * repeats)[:repeats + 1]:
            page.locator("#head input").click()        # the menu opens before the clock starts
            heads.append(click_to_pixels_once(page, "#heatmap",
                                              lambda h=h: page.get_by_role("option", name=h, exact=True).click(),
                                              server=server, times=srv))
        row("main view", "head menu (option click)", heads, srv)
        run("main view", "method radio", "#heatmap",
            [lambda m=m: page.locator("#method").get_by_label(m).check()
             for m in (["Rollout", "Raw attention"] * repeats)[:repeats + 1]])
        run("main view", "patch click on the heatmap", "#heatmap",
            [lambda rc=rc: _click_cell(page, "#heatmap", grid, *rc)
             for rc in [(1, 1), (2, 5), (6, 2), (4, 4), (7, 6), (3, 1), (5, 5)][:repeats + 1]])

        # ------------------------------------------------------------------ lesson, step 2
        page.get_by_role("tab", name="Learn", exact=True).click()
        page.get_by_role("tab", name="2 · One query").click()
        page.wait_for_selector("#learn-step1-img img")
        _wait_idle(page)
        cells = [(1, 6), (5, 2), (2, 2), (6, 5), (0, 3), (7, 7), (4, 1)]
        run("lesson", "patch click (scores)", "#learn-step1-img",
            [lambda rc=rc: _click_cell(page, "#learn-pick", grid, *rc) for rc in cells[:repeats + 1]])
        click_to_pixels_once(page, "#learn-step1-img", lambda: _click_cell(page, "#learn-pick", grid, 3, 3))
        page.locator("#learn-step1-md").click()         # from (3, 3): the arrows below never hit the border
        run("lesson", "Shift + arrow (scores)", "#learn-step1-img",
            [lambda k=k: page.keyboard.press(k) for k in (["Shift+ArrowRight", "Shift+ArrowDown", "Shift+ArrowLeft", "Shift+ArrowUp"] * repeats)
             [:repeats + 1]])
        run("lesson", "layer slider (type + Enter)", "#learn-step1-img",
            [lambda v=v: _set_number(page, "learn-layer", v) for v in ([2, 1, 0, 3] * repeats)[:repeats + 1]])
        run("lesson", "head slider (type + Enter)", "#learn-step1-img",
            [lambda v=v: _set_number(page, "learn-head", v) for v in ([1, 2, 3, 0] * repeats)[:repeats + 1]])

        def token(name):
            page.locator("#learn-token").get_by_label(name, exact=True).check()
        run("lesson", "CLS / patch query token", "#learn-step1-img",
            [lambda t=t: token(t) for t in (["CLS", "a patch (click it)"] * repeats)[:repeats + 1]])
        _show_part(page, "2 softmax")
        run("lesson", "temperature (type + Enter; softmax)", "#learn-step2-img",
            [lambda v=v: _set_number(page, "learn-temperature", v)
             for v in ([0.5, 2, 0.3, 1, 3] * repeats)[:repeats + 1]])
        _show_part(page, "slide")
        # a new slide needs a new query: the temperature is set first (not timed), then one press is timed
        slides, srv = [], []
        for v in ([1.0, 0.7, 1.5] * repeats)[:repeats + 1]:
            if slides:
                _set_number(page, "learn-temperature", v)
                _wait_idle(page)
                page.wait_for_timeout(300)
            slides.append(click_to_pixels_once(page, "#learn-slide", lambda: page.locator("#learn-slide-btn").click(),
                                               server=server, times=srv))
        row("lesson", "slide (all four steps, one press)", slides, srv)
    return rows


def train_in_page(url: str, timeout_s: float = 1800.0) -> dict:
    """Learn → 6 · Train → Start with the default steps: seconds from the click to the page saying the run is
    done (progress bar at 100 % and the final step shown), and the run's own clock as the page prints it."""
    with first_screen(url) as page:
        page.get_by_role("tab", name="Learn", exact=True).click()
        page.get_by_role("tab", name="6 · Train", exact=True).click()
        start = page.locator("#learn-train-start")
        start.wait_for()
        t0 = time.monotonic()
        start.click()
        page.wait_for_function(
            "() => { const b = document.querySelector('#learn-train-bar [role=progressbar]');"
            " const md = document.querySelector('#learn-train-md');"
            " return b && b.getAttribute('aria-valuenow') === '100' && md && /step (\\d+) \\/ \\1/.test(md.innerText); }",
            timeout=timeout_s * 1000, polling=250)
        wall = time.monotonic() - t0
        text = page.locator("#learn-train-md").inner_text()
    return {"wall_s": round(wall, 1), "page_says": text.splitlines()[0] if text else ""}


def _table(rows: list[dict]) -> str:
    out = ["| where | interaction | median ms | min | max | first | n | of which server (median ms) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        srv = f"{r['server_median_ms']:.0f}" if "server_median_ms" in r else "–"
        out.append(f"| {r['group']} | {r['interaction']} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | "
                   f"{r['max_ms']:.0f} | {r['first_ms']:.0f} | {r['n']} | {srv} |")
    return "\n".join(out)


def main(argv=None) -> int:
    """``python -m benchmarks.browser [--repeats N] [--model M]``: click -> pixels in Chromium for the lesson
    and the main view (1280x720, the app at one torch thread), printed as a Markdown table with the
    server-side share of each time (the handlers and PNG encoding, from the app's timing log)."""
    import argparse
    ap = argparse.ArgumentParser(description="click -> new pixels in headless Chromium")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train", action="store_true", help="instead: time Learn → 6 · Train with the default steps, "
                                                         "click to done, in the page")
    ap.add_argument("--model", default="demo-vit", help="demo-vit (default), or e.g. vit_base_patch16_224 "
                                                         "(random init here: no download)")
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    from viz_app.testing import served_app, served_app_process
    if args.train:
        before = load()
        with served_app("--model", "demo-vit", timeout=180) as url:
            r = train_in_page(url)
        print(f"watch it learn, default run, in Chromium: {r['wall_s']} s from Start to done "
              f"(the page: {r['page_says']}); load before {before}, after {load()}")
        return 0
    extra = [] if args.model.startswith("demo-") else ["--random-init"]
    grid = (8, 8) if args.model.startswith("demo-") else (14, 14)
    before = load()
    log = os.path.join(tempfile.gettempdir(), "benchmark_browser_server.log")
    with served_app_process("--model", args.model, *extra, timeout=300, log_path=log,
                            env={"OMP_NUM_THREADS": "1", "ATTENTION_VIZ_TIMING": "1"}) as (url, _pid):
        rows = click_to_pixels(url, args.repeats, grid=grid, server=ServerLog(log))
    print(f"{args.model} · 1280x720 · server at 1 torch thread · load before {before}, after {load()}\n")
    print(_table(rows))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
