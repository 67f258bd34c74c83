"""What the browser tests share: Debian's Chromium through Playwright, screenshots, waiting for pictures."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

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


def wait_status(pg, *parts: str) -> None:
    """The page's source-of-truth line (#status: "Showing image <sha> (<file>) · model <name>") names `parts`."""
    pg.wait_for_function("(parts) => { const e = document.querySelector('#status');"
                         " return e && parts.every(p => e.innerText.includes(p)); }", arg=list(parts))


def wait_idle(pg) -> None:
    """No Gradio progress indicator left on the page."""
    pg.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')")


@contextlib.contextmanager
def app_page(url: str, upload: str, *, height: int = 1100, timeout_ms: int = 90_000, **context_kw) -> Iterator:
    """A Chromium page on the app at `url` with the image `upload` analysed (the heatmap is shown)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1480, "height": height}, **context_kw)
        try:
            pg = context.new_page()
            pg.set_default_timeout(timeout_ms)
            pg.goto(url)
            pg.wait_for_selector("#heatmap img")          # the first screen already shows an example
            pg.wait_for_selector("#input-image input[type=file]", state="attached")
            pg.set_input_files("#input-image input[type=file]", str(upload))
            wait_status(pg, os.path.basename(str(upload)))
            yield pg
        finally:
            context.close()
            browser.close()
