"""A sweep, not a walk: every bundled model × every view and lesson step in headless Chromium, with an image
change and a model change in the middle; and the layout at 1024×768, 1280×720 and 1920×1080.

Asserted everywhere: no red Error badge and no error toast; every caption on screen that names an image and a
model names the ones the page shows (#status, the session's source of truth); the layer and head controls
have ranges valid for the model (one attention layer: no slider); the lesson is reachable without overflow
menus. Kept affordable: the model × view sweep runs once at 1280×720 on one page, the layout checks are one
page per viewport (demo-vit). Screenshots of every lesson step at 1280×720 go to $VIZ_APP_SCREENSHOTS.
"""
from __future__ import annotations

import re

import pytest

from attention.lesson.figure import FIG_TEXT_PX, MIN_TEXT_PX, PRESENTER_SCALE
from browser_support import CHROMIUM, ARGS, MARKS, wait_idle

pytestmark = MARKS + [pytest.mark.slow]

MODELS = ["demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool"]
VIEWPORTS = [(1024, 768), (1280, 720), (1920, 1080)]
PROVENANCE = r"image ([0-9a-f]{8})(?: \([^)]*\))? · model (\S+?)\.?$"
LESSON_STEPS = [("1 · Tokens", "#learn-tokens-md"), ("2 · One query", "#learn-step1-md"),
                ("3 · Heads", "#learn-heads-md"), ("4 · Layers", "#learn-layers-md"),
                ("5 · Special tokens", "#learn-special-md")]


@pytest.fixture(scope="module")
def server():
    from attention.models import demo_names
    missing = [m for m in MODELS if m not in demo_names()]
    if missing:
        pytest.skip(f"bundled models missing: {missing}")
    from viz_app.testing import served_app
    with served_app("--model", "demo-vit") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url, width, height):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    pg = ctx.new_page()
    pg.set_default_timeout(90_000)
    pg.goto(url)
    pg.wait_for_selector("#heatmap img")           # the first screen already shows an example
    wait_status(pg)
    return ctx, pg


def wait_status(pg) -> tuple[str, str]:
    pg.wait_for_function("() => /image [0-9a-f]{8}/.test((document.querySelector('#status') || {}).innerText || '')")
    return current(pg)


def current(pg) -> tuple[str, str]:
    text = pg.locator("#status").inner_text().strip()
    m = re.search(PROVENANCE, text, re.M)
    assert m, text
    return m.group(1), m.group(2)


def settle(pg) -> None:
    wait_idle(pg)
    pg.wait_for_timeout(300)
    wait_idle(pg)


def assert_clean(pg, where: str) -> None:
    """No Error badge on any component, no error toast, every caption on screen agrees with #status."""
    badges = pg.eval_on_selector_all("[data-testid=status-tracker] .error",
                                     "es => es.filter(e => e.offsetParent !== null).map(e => e.innerText)")
    assert not badges, f"{where}: Error badges {badges}"
    toasts = pg.eval_on_selector_all(".toast-body", "es => es.map(e => e.innerText)")
    assert not [t for t in toasts if "error" in t.lower()], f"{where}: error toasts {toasts}"
    sha, model = current(pg)
    texts = pg.eval_on_selector_all(".prose", "es => es.filter(e => e.offsetParent !== null).map(e => e.innerText)")
    for text in texts:
        for line in text.splitlines():
            m = re.search(PROVENANCE, line.strip())
            if m:
                assert (m.group(1), m.group(2)) == (sha, model), f"{where}: a caption names {m.groups()}, " \
                                                                  f"the page shows {(sha, model)}: {line!r}"


def run_tab(pg, tab: str, button, md_id: str, pattern: str, where: str) -> None:
    """Open `tab`, press `button` (None: the tab computes on opening), wait until #md_id's text matches the
    regular expression `pattern`, then check the page is clean."""
    pg.get_by_role("tab", name=tab, exact=True).click()
    if button:
        pg.locator(button).click()
    pg.wait_for_function("([id, p]) => { const e = document.querySelector('#' + id);"
                         " return e && new RegExp(p).test(e.innerText); }", arg=[md_id, pattern])
    settle(pg)
    assert_clean(pg, where)


def slider(pg, elem_id: str):
    """(visible, min, max, value) of a slider."""
    loc = pg.locator(f"#{elem_id}")
    if loc.count() == 0 or not loc.is_visible():
        return False, None, None, None
    rng = pg.locator(f"#{elem_id} input[type=range]")
    return True, float(rng.get_attribute("min")), float(rng.get_attribute("max")), float(rng.input_value())


def expected_layers(model: str) -> tuple[int, int]:
    """(attention layers with a spatial map, heads of the last one) of `model`, computed here through the
    library on the first example (not read from the page)."""
    from viz_app.callbacks import Callbacks
    from viz_app.examples import example_files
    a = Callbacks().analyse("matrix", example_files()[0][0], model)
    spatial = [m for m in a.result.maps if m.is_spatial]
    return len(spatial), spatial[-1].num_heads


def choose_model(pg, model: str) -> None:
    pg.get_by_role("tab", name="Attention", exact=True).click()
    pg.locator("#model input").click()
    pg.get_by_role("option", name=re.compile("^" + re.escape(model) + r"\b")).first.click()
    pg.wait_for_function("(m) => (document.querySelector('#status') || {}).innerText.includes('model ' + m)",
                         arg=model)
    settle(pg)


def click_example(pg, index: int) -> None:
    before = current(pg)[0]
    pg.locator("#examples button.thumbnail-item").nth(index).click()
    pg.wait_for_function("(s) => !(document.querySelector('#status').innerText.includes(s))", arg=before)
    settle(pg)


def sweep_views(pg, model: str, n_layers: int, n_heads: int) -> None:
    """Every view tab of the page on the current (image, model)."""
    where = f"{model} / Attention"
    assert_clean(pg, where)
    visible, lo, hi, value = slider(pg, "layer")
    if n_layers > 1:
        assert visible and lo == 0 and hi == n_layers - 1 and 0 <= value <= hi, (where, lo, hi, value)
    else:
        assert not visible, f"{where}: a layer slider for a one-layer model"
    run_tab(pg, "Grid", None, "grid-md", r"layers × \d+ heads", f"{model} / Grid")
    run_tab(pg, "Compare", "#compare-btn", "compare-b-md", r"image [0-9a-f]{8}", f"{model} / Compare")
    pg.locator("#compare-a-head input").click()
    offered = pg.eval_on_selector_all("[role=option]", "es => es.map(e => e.innerText.replace('✓', '').trim())")
    pg.keyboard.press("Escape")
    assert offered == ["mean", "max", "min"] + [str(i) for i in range(n_heads)], (model, offered)
    run_tab(pg, "Heads", "#diag-btn", "diag-md", r"image [0-9a-f]{8}|Not|not", f"{model} / Heads")
    run_tab(pg, "Faithfulness", "#faith-btn", "faith-md", r"image [0-9a-f]{8}", f"{model} / Faithfulness")
    pg.get_by_role("tab", name="Export", exact=True).click()
    pg.locator("#prepare-downloads").click()
    pg.locator("#downloads a[download$='.npz']").wait_for()
    settle(pg)
    assert_clean(pg, f"{model} / Export")


def sweep_lesson(pg, model: str, shots=None) -> None:
    """Every lesson step on the current (image, model): computed on it, or a message saying why not."""
    pg.get_by_role("tab", name="Learn", exact=True).click()
    for title, md in LESSON_STEPS:
        pg.get_by_role("tab", name=title, exact=True).click()
        sha, _ = current(pg)
        pg.wait_for_function("([sel, sha]) => { const t = document.querySelector(sel).innerText;"
                             " return t.includes(sha) || t.includes('Not available'); }", arg=[md, sha])
        settle(pg)
        assert_clean(pg, f"{model} / Learn / {title}")
        for elem_id in ("learn-layer", "learn-head", "learn-row", "learn-col"):
            visible, lo, hi, value = slider(pg, elem_id)
            if visible:
                assert lo < hi and lo <= value <= hi, (model, elem_id, lo, hi, value)
        if shots is not None:
            shots(pg, f"learn_{title.split(' · ')[0]}_{title.split(' · ')[1].replace(' ', '_').lower()}")


def test_every_model_every_view_and_step_with_image_and_model_changes(server, browser):
    ctx, pg = open_page(browser, server, 1280, 720)
    try:
        for k, model in enumerate(MODELS):
            choose_model(pg, model)                       # a model change (from the previous one)
            n_layers, n_heads = expected_layers(model)
            sweep_views(pg, model, n_layers, n_heads)
            click_example(pg, 1 + k)                      # an image change in the middle
            assert_clean(pg, f"{model} after the image change")
            sweep_lesson(pg, model)
            # back on the main view: the new image's picture, every stale picture cleared
            pg.get_by_role("tab", name="Attention", exact=True).click()
            assert_clean(pg, f"{model} back on Attention")
    finally:
        ctx.close()


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def test_layout_lesson_visible_without_overflow_and_readable(server, browser, viewport, shots):
    width, height = viewport
    ctx, pg = open_page(browser, server, width, height)
    try:
        for tabs in ("#main-tabs", "#learn-tabs"):
            if tabs == "#learn-tabs":
                pg.get_by_role("tab", name="Learn", exact=True).click()
                pg.wait_for_selector("#learn-tabs")
            hidden = pg.eval_on_selector_all(f"{tabs} .overflow-menu",
                                             "es => es.filter(e => !e.classList.contains('hide') && "
                                             "getComputedStyle(e).display !== 'none').length")
            assert hidden == 0, f"{tabs}: tabs behind an overflow menu at {viewport}"
        for title, _ in LESSON_STEPS + [("6 · Train", None)]:
            tab = pg.get_by_role("tab", name=title, exact=True)
            assert tab.is_visible(), f"{title} not visible at {viewport}"
            box = tab.bounding_box()
            assert box["x"] + box["width"] <= width, f"{title} runs off the screen at {viewport}"
        pg.get_by_role("tab", name="2 · One query").click()
        pg.wait_for_selector("#learn-step1-img img")
        settle(pg)
        assert_clean(pg, f"Learn at {viewport}")
        if (width, height) != (1024, 768):
            # each part of the step fits one screen, its picture shown at >= its own size (text >= 14 px)
            for part in ("1 scores", "2 softmax", "3 weights", "4 output"):
                pg.locator("#learn-part").get_by_label(part, exact=True).check()
                sel = f"#learn-step{part[0]}-img img"
                pg.wait_for_selector(sel)
                pg.evaluate("() => window.scrollTo(0, 0)")
                box = pg.locator(sel).bounding_box()
                nw, nh = pg.eval_on_selector(sel, "e => [e.naturalWidth, e.naturalHeight]")
                shown = min(box["width"] / nw, box["height"] / nh)
                assert shown * MIN_TEXT_PX >= 14, f"{part}: text {shown * MIN_TEXT_PX:.1f} px at {viewport}"
                assert box["y"] + box["height"] <= height + 1, f"{part} does not fit the screen at {viewport}"
                if (width, height) == (1280, 720):
                    shots(pg, f"learn_2_one_query_part{part[0]}")
        if (width, height) == (1280, 720):
            pg.get_by_role("tab", name="Learn", exact=True).click()
            for title, _ in LESSON_STEPS:
                if title.startswith("2"):
                    continue
                pg.get_by_role("tab", name=title, exact=True).click()
                settle(pg)
                shots(pg, f"learn_{title.split(' · ')[0]}_{title.split(' · ')[1].replace(' ', '_').lower()}")
        # no image at all: the lesson says so, nothing turns red
        pg.locator("#input-image button[aria-label='Remove Image']").first.click()
        pg.wait_for_function("() => document.querySelector('#status').innerText.includes('No image')")
        pg.get_by_role("tab", name="1 · Tokens", exact=True).click()
        pg.wait_for_function("() => document.querySelector('#learn-tokens-md').innerText.includes('Pick an image first')")
        settle(pg)
        badges = pg.eval_on_selector_all("[data-testid=status-tracker] .error",
                                         "es => es.filter(e => e.offsetParent !== null).length")
        assert badges == 0
    finally:
        ctx.close()


# the smallest text of each picture of steps 1, 3-6, in picture pixels: steps 1, 3, 4, 5 draw it at FIG_TEXT_PX
# (x PRESENTER_SCALE in presenter mode), step 6 too
FIGURES = {"1 · Tokens": ["learn-tokens-img", "learn-pos-img"], "3 · Heads": ["learn-heads-img", "learn-depth-img"],
           "4 · Layers": ["learn-layers-img"], "5 · Special tokens": ["learn-prefix-img", "learn-norms-img"]}
TRAIN_FIGURES = ["learn-train-curves", "learn-train-probes"]
# on-screen scale of an <img> as Chromium draws it: its content box against its natural size, as object-fit
# places it (Gradio: scale-down, never enlarged)
SHOWN_JS = """(e) => { const s = getComputedStyle(e), w = e.clientWidth, h = e.clientHeight;
  const fit = Math.min(w / e.naturalWidth, h / e.naturalHeight);
  const k = {'scale-down': Math.min(1, fit), 'contain': fit, 'none': 1}[s.objectFit] ?? fit;
  return [k, e.naturalWidth, e.naturalHeight, w, h, s.objectFit, window.devicePixelRatio]; }"""


def shown_text(pg, elem_id: str, text_px: float) -> tuple[float, int]:
    """(smallest text of the picture on screen in CSS px, its natural width)."""
    sel = f"#{elem_id} img"
    pg.wait_for_function("(s) => { const e = document.querySelector(s); return e && e.complete && e.naturalWidth; }",
                         arg=sel)
    k, nw, nh, w, h, fit, dpr = pg.eval_on_selector(sel, SHOWN_JS)
    assert dpr == 1 and pg.locator(sel).is_visible(), (elem_id, dpr)
    print(f"{elem_id}: natural {nw}x{nh}, box {w}x{h} ({fit}), shown x{k:.3f}: smallest text {k * text_px:.1f} px")
    return k * text_px, nw


def test_lesson_pictures_text_readable_normal_and_presenter(server, browser, shots):
    """Steps 1, 3-6 at 1280x720: every picture's smallest text >= 14 px on screen, >= 20 px in presenter mode,
    where steps 1, 3-5 are drawn larger and every picture is shown larger."""
    ctx, pg = open_page(browser, server, 1280, 720)
    try:
        pg.get_by_role("tab", name="Learn", exact=True).click()
        normal = {}
        for presenter in (False, True):
            if presenter:       # toggled on step 1 (the step on screen is redrawn)
                pg.get_by_role("tab", name="1 · Tokens", exact=True).click()
                settle(pg)
                pg.locator("#presenter input[type=checkbox]").check()
                pg.wait_for_function("() => document.body.classList.contains('presenter')")
            for title, ids in FIGURES.items():
                pg.get_by_role("tab", name=title, exact=True).click()
                for elem_id in ids:
                    if presenter:   # the presenter drawing has arrived (a larger picture)
                        pg.wait_for_function("([s, w]) => { const e = document.querySelector(s);"
                                             " return e && e.complete && e.naturalWidth > w; }",
                                             arg=[f"#{elem_id} img", normal[elem_id][1]])
                    settle(pg)
                    text, nw = shown_text(pg, elem_id, FIG_TEXT_PX * (PRESENTER_SCALE if presenter else 1.0))
                    assert text >= (20 if presenter else 14), f"{title} / {elem_id}: text {text:.1f} px"
                    if presenter:
                        assert nw > normal[elem_id][1], f"{elem_id} not drawn larger in presenter mode"
                        assert text > normal[elem_id][0], f"{elem_id} not shown larger in presenter mode"
                    else:
                        normal[elem_id] = (text, nw)
                assert_clean(pg, f"Learn / {title} (presenter {presenter})")
                if presenter:
                    print(shots(pg, f"learn_{title[0]}_presenter", for_readme=False))
            pg.get_by_role("tab", name="6 · Train", exact=True).click()
            if not presenter:       # a short run: both pictures drawn
                box = pg.locator("#learn-train-steps input[type=number]")
                box.fill("10")
                box.press("Enter")
                pg.locator("#learn-train-start").click()
                pg.wait_for_function("() => /finished/.test(document.querySelector('#learn-train-md').innerText)")
            settle(pg)
            for elem_id in TRAIN_FIGURES:
                if presenter:       # redrawn larger for presenter mode when the step opened
                    pg.wait_for_function("([s, w]) => { const e = document.querySelector(s);"
                                         " return e && e.complete && e.naturalWidth > w; }",
                                         arg=[f"#{elem_id} img", normal[elem_id][1]])
                text, nw = shown_text(pg, elem_id, FIG_TEXT_PX * (PRESENTER_SCALE if presenter else 1.0))
                assert text >= (20 if presenter else 14), f"6 · Train / {elem_id}: text {text:.1f} px"
                box = pg.locator(f"#{elem_id} img").bounding_box()
                assert box["y"] + box["height"] <= 721, f"6 · Train / {elem_id} ends below the screen: {box}"
                if presenter:
                    assert text > normal[elem_id][0], f"{elem_id} not shown larger in presenter mode"
                else:
                    normal[elem_id] = (text, nw)
            print(shots(pg, f"learn_6_train{'_presenter' if presenter else ''}", for_readme=not presenter))
    finally:
        ctx.close()


# presenter mode at 1280x720, walked through with Next: (what is on screen, its explanation, its pictures)
PRESENTER_WALK = [("1 · Tokens", "#learn-tokens-md", FIGURES["1 · Tokens"])] + [
    (f"2 · One query, part {k}", f"#learn-step{k}-md", [f"learn-step{k}-img"]) for k in range(1, 5)] + [
    (title, md, FIGURES[title]) for title, md in LESSON_STEPS[2:]] + [("6 · Train", "#learn-train-md", TRAIN_FIGURES)]


def fits_one_screen(pg, where: str, height: int = 720) -> int:
    """The page does not scroll (scrollHeight <= the viewport + 1) and every visible lesson picture ends on it (the
    slide, shown at the size it is drawn, ends inside its own scrolling box, which ends on the screen)."""
    pg.evaluate("() => window.scrollTo(0, 0)")
    sh = pg.evaluate("() => document.documentElement.scrollHeight")
    assert sh <= height + 1, f"{where}: scrollHeight {sh} for a {height} px screen"
    bottoms = pg.eval_on_selector_all("#learn-tabs img", "es => es.filter(e => e.offsetParent !== null)"
                                      ".map(e => (e.closest('#learn-slide') || e).getBoundingClientRect().bottom)")
    assert bottoms and max(bottoms) <= height + 1, f"{where}: a picture ends at {max(bottoms or [0]):.0f} px"
    return sh


def test_presenter_mode_each_step_fits_one_screen(server, browser, shots):
    """Presenter mode at 1280x720 (a projector), walked through with Next: every step, each part of step 2 and
    step 6 fit one screen without scrolling, every lesson picture's smallest text >= 20 px on screen; Previous,
    Next, the step tabs and the Presenter box stay on screen and clickable."""
    from attention.lesson.tokens import TOKENS_BOX
    ctx, pg = open_page(browser, server, 1280, 720)
    try:
        sha, _ = current(pg)
        pg.get_by_role("tab", name="Learn", exact=True).click()
        pg.locator("#learn-tokens-md").wait_for()
        pg.locator("#presenter input[type=checkbox]").check()
        pg.wait_for_function("() => document.body.classList.contains('presenter')")
        # step 1 was drawn for the normal layout first: wait for its presenter drawing
        pg.wait_for_function("(w) => { const e = document.querySelector('#learn-tokens-img img');"
                             " return e && e.complete && e.naturalWidth > w; }", arg=TOKENS_BOX[0])
        for k, (where, md, pictures) in enumerate(PRESENTER_WALK):
            if k:
                pg.locator("#learn-next").click()       # fails if anything covers it
            if where.startswith("6"):                   # a short run: both pictures drawn
                box = pg.locator("#learn-train-steps input[type=number]")
                box.fill("10")
                box.press("Enter")
                pg.locator("#learn-train-start").click()
                pg.wait_for_function("() => /finished/.test(document.querySelector('#learn-train-md').innerText)")
            else:
                pg.wait_for_function("([sel, sha]) => { const e = document.querySelector(sel);"
                                     " return e && e.offsetParent !== null && e.innerText.includes(sha); }",
                                     arg=[md, sha])
            settle(pg)
            assert_clean(pg, f"presenter / {where}")
            sh = fits_one_screen(pg, f"presenter / {where}")
            texts = []
            for elem_id in pictures:     # step 2: canvases (MIN_TEXT_PX), the others figures (FIG_TEXT_PX)
                px = (MIN_TEXT_PX if elem_id.startswith("learn-step") else FIG_TEXT_PX) * PRESENTER_SCALE
                text, _ = shown_text(pg, elem_id, px)
                assert text >= 20, f"presenter / {where} / {elem_id}: smallest text {text:.1f} px"
                texts.append(text)
            for sel in ("#learn-prev", "#learn-next", "#presenter input[type=checkbox]",
                        "#learn-tabs button[role=tab]:last-of-type"):
                b = pg.locator(sel).bounding_box()
                assert b and b["y"] >= 0 and b["y"] + b["height"] <= 720 and b["x"] + b["width"] <= 1280, (where, sel)
            hidden = pg.eval_on_selector_all("#learn-tabs .overflow-menu",
                                             "es => es.filter(e => !e.classList.contains('hide') && "
                                             "getComputedStyle(e).display !== 'none').length")
            assert hidden == 0, f"presenter / {where}: step tabs behind an overflow menu"
            print(f"presenter / {where}: scrollHeight {sh}, smallest text on screen {min(texts):.1f} px")
            shots(pg, "presenter_" + re.sub(r"\W+", "_", where).strip("_").lower(), for_readme=False)
        # step 2's slide (all four steps in one picture, for a download) is shown at the size it is drawn, in a
        # box of the screen that scrolls: its text is as readable as the parts' (>= 20 px)
        pg.get_by_role("tab", name="2 · One query", exact=True).click()
        pg.locator("#learn-part").get_by_label("slide", exact=True).check()
        pg.locator("#learn-slide-btn").click()
        pg.wait_for_selector("#learn-slide img")
        settle(pg)
        assert_clean(pg, "presenter / 2 · One query, slide")
        sh = fits_one_screen(pg, "presenter / 2 · One query, slide")
        text, _ = shown_text(pg, "learn-slide", MIN_TEXT_PX * PRESENTER_SCALE)
        assert text >= 20, f"presenter / 2 · One query, slide: smallest text {text:.1f} px"
        print(f"presenter / 2 · One query, slide: scrollHeight {sh}, smallest text on screen {text:.1f} px")
        shots(pg, "presenter_slide", for_readme=False)
    finally:
        ctx.close()


def test_presenter_mode_toggles_cleanly_on_every_step(server, browser):
    """Presenter mode on and off on each lesson step (step 6 included, which has nothing to redraw): no Error
    badge, no error toast, the captions still those of the page's image and model."""
    ctx, pg = open_page(browser, server, 1280, 720)
    try:
        pg.get_by_role("tab", name="Learn", exact=True).click()
        box = pg.locator("#presenter input[type=checkbox]")
        for title, _ in LESSON_STEPS + [("6 · Train", None)]:
            pg.get_by_role("tab", name=title, exact=True).click()
            settle(pg)
            for on in (True, False):
                box.set_checked(on)
                pg.wait_for_function("(on) => document.body.classList.contains('presenter') === on", arg=on)
                settle(pg)
                assert_clean(pg, f"{title}, presenter {'on' if on else 'off'}")
    finally:
        ctx.close()
