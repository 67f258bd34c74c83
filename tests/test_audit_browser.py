"""The audit's report.html opens in Chromium with every picture loaded, from a file:// URL with no
network (the page is self-contained). Screenshot: docs/screenshots/audit_report.png when
$VIZ_APP_SCREENSHOTS is set."""
from __future__ import annotations

import json
import os

import pytest

from browser_support import ARGS, CHROMIUM, MARKS

from attention.audit import run_audit
from attention.demo.shapes import write_dataset

pytestmark = MARKS


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, single_intra_op_thread):
    data = str(tmp_path_factory.mktemp("shapes"))
    write_dataset(40, 4, data)
    out = str(tmp_path_factory.mktemp("audit"))
    run_audit(data, out, "demo-vit", methods=["rollout", "grad_rollout", "gradcam"], shard_size=20,
              faithfulness_steps=4, quiet=True)
    return out


def test_report_opens_and_its_pictures_load(report_dir, shots):
    from playwright.sync_api import sync_playwright
    report = json.load(open(os.path.join(report_dir, "report.json")))
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1240, "height": 1400})
            page.on("request", lambda r: requests.append(r.url))
            page.goto("file://" + os.path.join(report_dir, "report.html"))
            page.wait_for_load_state("load")
            imgs = page.eval_on_selector_all(
                "img", "els => els.map(e => ({ok: e.complete && e.naturalWidth > 0, w: e.naturalWidth, alt: e.alt}))")
            n_maps = len(report["class_maps"]["classes"]) * len(report["methods"])
            assert len(imgs) >= n_maps + 4          # class maps, head plots, worst-localised examples
            broken = [i["alt"] for i in imgs if not i["ok"]]
            assert not broken, f"pictures that did not load: {broken}"
            assert page.locator("h1").inner_text().startswith("Attention audit")
            acc = report["classification"]["accuracy"]["mean"]
            assert f"{acc:.3f}" in page.locator("body").inner_text()
            assert all(u.startswith(("file://", "data:")) for u in requests), [u for u in requests if "data:" not in u]
            page.set_viewport_size({"width": 1240, "height": 1300})
            shots(page, "audit_report")
        finally:
            browser.close()
