"""What the browser tests share: Debian's Chromium through Playwright, screenshots, waiting for pictures."""
from __future__ import annotations

import os
import shutil

import pytest

from attention.models import demo_names

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
    pytest.mark.skipif("demo-vit" not in demo_names(), reason="assets/demo-vit.safetensors/.json missing "
                                                             "(python -m attention.demo train --arch demo-vit)"),
]


def screenshot_saver(folder):
    """``save(page_or_locator, name, for_readme=True, **kw)``: a PNG in `folder`, copied to
    $VIZ_APP_SCREENSHOTS (the README's docs/screenshots/) when that is set."""
    readme = os.environ.get("VIZ_APP_SCREENSHOTS")

    def save(target, name: str, for_readme: bool = True, **kw):
        path = folder / f"{name}.png"
        target.screenshot(path=str(path), **kw)
        if readme and for_readme:
            os.makedirs(readme, exist_ok=True)
            shutil.copyfile(path, os.path.join(readme, f"{name}.png"))
        return path
    return save


def src(pg, selector: str) -> str:
    return pg.eval_on_selector(selector, "e => e.src")


def wait_new_src(pg, selector: str, old) -> None:
    pg.wait_for_function("([sel, old]) => { const e = document.querySelector(sel); return e && e.src && e.src !== old; }",
                         arg=[selector, old])


def wait_idle(pg) -> None:
    """No Gradio progress indicator left on the page."""
    pg.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')")
