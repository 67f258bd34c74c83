"""The Live tab: frames per second of the heatmap in Chromium, on the bundled models and DeiT-S.

Chromium's fake camera (``--use-fake-device-for-media-stream``: a moving test pattern at the 320×240 the
tab asks for) streams into the app (``python app.py --model M``, one torch thread; DeiT-S random init, as
nothing is downloaded here). The rate is counted in the page: new heatmap pictures decoded and shown
(``<img>`` ``src`` changes) over ``--seconds`` after the first one, i.e. what the class sees. The
server's own rate (from its caption) is printed beside it.

``python -m benchmarks.live [--seconds 8] [--models demo-vit,deit_small_patch16_224]``
"""
from __future__ import annotations

import argparse
import re

from benchmarks.browser import first_screen, unavailable
from benchmarks.timing import load

FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
MODELS = ("demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool", "deit_small_patch16_224")

_COUNT = """
() => {
  const b = {n: 0, t: [], src: null};
  window.__live = b;
  const check = () => {
    const im = document.querySelector('#live-heatmap img');
    if (!im || !im.src || im.src === b.src) return;
    b.src = im.src;
    im.decode().then(() => requestAnimationFrame(() => { b.n += 1; b.t.push(performance.now()); }), () => {});
  };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                      attributeFilter: ['src']});
}
"""


def live_page(url: str):
    """A Chromium page (1280×720, fake camera allowed) on the app at `url`, its first screen shown."""
    return first_screen(url, args=FAKE_CAMERA, permissions=["camera"])


def start_live(page) -> None:
    """Open the Live tab, allow the (fake) camera and press Record."""
    page.get_by_role("tab", name="Live", exact=True).click()
    page.locator("#live-cam").get_by_text("Click to Access Webcam").click()
    page.locator("#live-cam button[aria-label='capture photo']").click()


def frames_per_second(page, seconds: float) -> float:
    """Pictures shown per second, counted from the first one over the next `seconds`."""
    page.evaluate(_COUNT)
    page.wait_for_function("() => window.__live.n >= 1", timeout=120_000)
    page.wait_for_timeout(seconds * 1000)
    t = page.evaluate("() => window.__live.t")
    return (len(t) - 1) / ((t[-1] - t[0]) / 1000) if len(t) > 1 else 0.0


def measure(model: str, seconds: float) -> dict:
    from viz_app.testing import served_app
    extra = [] if model.startswith("demo-") else ["--random-init"]
    with served_app("--model", model, *extra, timeout=300, env={"OMP_NUM_THREADS": "1"}) as url, \
            live_page(url) as page:
        start_live(page)
        fps = frames_per_second(page, seconds)
        caption = page.locator("#live-md").inner_text()
        server = re.search(r"([0-9.]+) frames/s", caption)
    return {"model": model, "browser_fps": round(fps, 1), "server_fps": float(server.group(1)) if server else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    before = load()
    rows = [measure(m, args.seconds) for m in args.models.split(",")]
    print(f"Live tab, Chromium fake camera 320×240, 1280×720, server at 1 torch thread; load before {before}, "
          f"after {load()}\n")
    print("| model | heatmaps shown per second (browser) | server's rate (its caption) | goal |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['browser_fps']:.1f} | {r['server_fps']} | ≥ 5 |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
