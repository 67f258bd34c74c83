"""The Live tab in Chromium with its fake camera: frames stream in, the heatmap follows them, nothing turns red.
(The frame rate is a benchmark: `python -m benchmarks.live`.)"""
from __future__ import annotations

from benchmarks.live import frames_per_second, live_page, start_live
from tests.browser_support import MARKS, screenshot_saver
from viz_app.testing import served_app

pytestmark = MARKS


def test_live_heatmap_follows_the_camera_without_error_badges(tmp_path):
    shots = screenshot_saver(tmp_path)
    with served_app("--model", "demo-vit") as url, live_page(url) as pg:
        start_live(pg)
        rate = frames_per_second(pg, 3.0)
        assert rate > 0, "fewer than two heatmaps in 3 s"
        caption = pg.locator("#live-md").inner_text()
        assert "frames/s" in caption and "model demo-vit" in caption.replace("`", "")
        assert "320×240" in caption                  # the size the tab asks the camera for
        badges = pg.eval_on_selector_all("[data-testid=status-tracker] .error",
                                         "es => es.filter(e => e.offsetParent !== null).length")
        assert badges == 0
        shots(pg, "live")
        # the other tabs keep working while the camera streams
        pg.get_by_role("tab", name="Attention", exact=True).click()
        pg.wait_for_selector("#heatmap img")
