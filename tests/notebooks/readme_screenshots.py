"""The README's notebook screenshots, taken in JupyterLab with Chromium (not a test; run by hand).

    python tests/notebooks/readme_screenshots.py --jupyter /path/to/bin/jupyter [--out docs/screenshots]

``--jupyter``: the ``jupyter`` command of any environment with JupyterLab (``pip install jupyterlab``; it
need not be this project's). The kernel is this interpreter (a kernelspec in a temporary JUPYTER_PATH), so
the notebook imports this checkout. A notebook with `show` and `explore` on the bundled demo-vit (as an
``nn.Module`` object) is written to a temporary folder, run with "Run All Cells", and the page is taken
twice: the inline view (notebook_show.png) and the app inline in its iframe (notebook_explore.png).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CELLS = [
    '''import warnings; from tqdm import TqdmWarning; warnings.simplefilter("ignore", TqdmWarning)   # no ipywidgets here
import numpy as np
from attention import show, explore
from attention.models import load_model
from attention.demo.shapes import CLASS_NAMES, make_sample

model = load_model("demo-vit").model      # an nn.Module in memory: the bundled timm ViT (trained on shapes)
photo, mask, label = make_sample(np.random.default_rng(7), 64, CLASS_NAMES.index("star"))
show(model, photo, labels=CLASS_NAMES)''',
    '''app = explore(model, labels=CLASS_NAMES, image=photo, name="my-vit")
app''',
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jupyter", required=True, help="the jupyter command of an environment with JupyterLab")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshots"))
    args = ap.parse_args(argv)
    import nbformat
    from playwright.sync_api import sync_playwright

    work = tempfile.mkdtemp(prefix="nb_screens_")
    spec = os.path.join(work, "jupyter", "kernels", "attviz")
    os.makedirs(spec)
    with open(os.path.join(spec, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": "attention-viz", "language": "python",
                   "env": {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": ROOT}}, f)
    nb_dir = os.path.join(work, "nb")
    os.makedirs(nb_dir)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS], metadata={
        "kernelspec": {"name": "attviz", "display_name": "attention-viz", "language": "python"}})
    nbformat.write(nb, os.path.join(nb_dir, "attention_in_a_notebook.ipynb"))
    port = _free_port()
    server = subprocess.Popen(
        [args.jupyter, "lab", "--allow-root", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", f"--notebook-dir={nb_dir}"],
        env={**os.environ, "JUPYTER_PATH": os.path.join(work, "jupyter")}, cwd=nb_dir,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/lab", timeout=2)
                break
            except OSError:
                time.sleep(1)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox",
                                                                              "--disable-gpu"])
            pg = b.new_page(viewport={"width": 1280, "height": 1100})
            pg.set_default_timeout(180_000)
            pg.goto(base + "/lab/tree/attention_in_a_notebook.ipynb")
            pg.wait_for_selector(".jp-Notebook .jp-Cell")
            pg.wait_for_timeout(5000)
            if pg.locator(".jp-FileBrowser").is_visible():
                pg.keyboard.press("Control+b")          # the file browser takes room the outputs need
            pg.click("text=Run")
            pg.click("text=Run All Cells")
            pg.wait_for_selector(".attention-view img.av-heatmap")
            pg.wait_for_timeout(1500)
            try:       # JupyterLab's first-start question about news
                pg.get_by_role("button", name="No", exact=True).click(timeout=5000)
            except Exception:  # noqa: BLE001 - not asked this time
                pass
            pg.screenshot(path=os.path.join(args.out, "notebook_show.png"))
            pg.wait_for_selector("iframe")
            pg.set_viewport_size({"width": 1600, "height": 1250})
            pg.evaluate("() => document.querySelector('iframe').scrollIntoView({block: 'start'})")
            frame = pg.frame_locator("iframe")
            frame.locator("#heatmap img").wait_for(state="attached")
            frame.locator("#predictions [data-testid=label-output-value]").wait_for(state="attached")
            pg.wait_for_timeout(3000)
            pg.evaluate("() => document.querySelector('iframe').scrollIntoView({block: 'start'})")
            pg.mouse.move(640, 600)
            pg.mouse.wheel(0, -130)          # the explore cell's code above the app
            pg.wait_for_timeout(1500)
            pg.screenshot(path=os.path.join(args.out, "notebook_explore.png"))
            b.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)      # the server and its kernel (their own session)
        server.wait(timeout=30)
    print(f"wrote {args.out}/notebook_show.png and notebook_explore.png")


if __name__ == "__main__":
    main()
