"""`from attention import show, explore` on models held in memory.

The main test starts a real Jupyter kernel (nbclient + ipykernel), runs the README's "In a notebook" code
block in it as written (the kernel still fresh), then tests/notebooks/show_and_explore.ipynb cell by cell: a
small timm ViT and a small Hugging Face ViTForImageClassification with its
ViTImageProcessor, `show` on both (the notebook checks the predictions and the grid against computations
done there another way), then `explore` on both; between the explore cell and the close cell Chromium
opens the served app and finds the heatmap and the predictions; after `close()` the URLs stop answering.
The other tests are plain pytest: errors, `show(capture_result, image)`, preprocessing choices.
"""
from __future__ import annotations

import base64
import io
import os
import re
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from attention import capture, explore, show
from attention.errors import ImageError, LabelsError, UserError
from attention.methods import compute_map
from attention.notebook import NotAModelError, UnknownPreprocessingError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "tests", "notebooks", "show_and_explore.ipynb")
CHROMIUM = "/usr/bin/chromium"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def _outputs(cell) -> str:
    text = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            text.append(o.get("text", ""))
        elif o.get("output_type") in ("execute_result", "display_data"):
            text.append(o.get("data", {}).get("text/html", ""))
        elif o.get("output_type") == "error":
            text.append("\n".join(o.get("traceback", [])))
    return "\n".join(text)


def _check_self_contained(page: str, min_pictures: int) -> None:
    """Pictures inlined as PNG data, no resource fetched from anywhere."""
    pictures = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(pictures) >= min_pictures
    for b64 in pictures[:3]:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page), "the view must not load anything"
    assert "<link" not in page and "@import" not in page


def readme_block() -> str:
    """The first Python block of the README's "In a notebook" section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("\n## In a notebook\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def check_readme_outputs(out: str, folder) -> None:
    """What the README block prints and writes: a top class among its labels, a 14 x 14 map and 12 layers
    (ViT-S/16 at 224), the saved page self-contained, and the app's URL dead after its close()."""
    assert "Traceback" not in out, out[-3000:]
    assert re.search(r"'label': '(cat|dog|other)'", out)
    assert "(14, 14) 12" in out
    url = re.search(r"http://127\.0\.0\.1:\d+/", out).group(0)
    assert not _answers(url)
    _check_self_contained(open(os.path.join(folder, "view.html"), encoding="utf-8").read(), 1 + 12 * 7)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)")
def test_readme_and_notebook_in_a_kernel(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from playwright.sync_api import sync_playwright

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # first, in the still fresh kernel: the README's "In a notebook" code block exactly as written
    nb.cells.insert(0, nbformat.v4.new_code_cell(readme_block()))
    client = NotebookClient(nb, kernel_name="python3", timeout=180,
                            resources={"metadata": {"path": str(tmp_path)}})
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    explore_at = next(i for i in code if "explore(vit" in nb.cells[i].source)
    with client.setup_kernel(env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}):
        client.execute_cell(nb.cells[0], 0)
        check_readme_outputs(_outputs(nb.cells[0]), tmp_path)
        code = code[1:]
        for i in code:
            if i > explore_at:
                break
            client.execute_cell(nb.cells[i], i)
        outs = [_outputs(nb.cells[i]) for i in code]
        shown = next(o for i, o in zip(code, outs) if nb.cells[i].source.startswith("view = show"))
        _check_self_contained(shown, 1 + 2 * (3 + 1))        # the map + 2 layers x (3 heads + mean)
        assert "cat" in shown and "teapot" in shown and "dog" in shown
        shown_hf = next(o for i, o in zip(code, outs) if nb.cells[i].source.startswith("view_hf = show"))
        _check_self_contained(shown_hf, 1 + 2 * (4 + 1))
        assert "tabby" in shown_hf
        top1 = re.search(r"^TOP1 (\S+)", "\n".join(outs), re.M).group(1)
        urls = re.search(r"URLS (\S+) (\S+)", "\n".join(outs))
        url, url2 = urls.group(1), urls.group(2)
        assert url != url2 and url.startswith("http://127.0.0.1:") and url2.startswith("http://127.0.0.1:")
        assert f"<iframe src='{url}'" in _outputs(nb.cells[explore_at])      # inline in the notebook
        assert _answers(url) and _answers(url2)              # two apps at once

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox",
                                                                        "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(90_000)
                page.goto(url)
                page.wait_for_selector("#heatmap img")
                page.wait_for_selector("#predictions [data-testid=label-output-value]")
                page.wait_for_function("() => document.querySelector('#status') && "
                                       "document.querySelector('#status').innerText.includes('tiny-vit')")
                shown_top1 = page.locator("#predictions [data-testid=label-output-value]").inner_text().strip()
                assert shown_top1 == top1           # the app on the same object and photo says what show() said
                assert page.locator("#model input").input_value() == "tiny-vit"
                if os.environ.get("VIZ_APP_SCREENSHOTS"):
                    page.screenshot(path=os.path.join(os.environ["VIZ_APP_SCREENSHOTS"], "notebook_explore.png"))
                page.goto(url2)
                page.wait_for_selector("#heatmap img")
                page.wait_for_function("() => document.querySelector('#status') && "
                                       "document.querySelector('#status').innerText.includes('ViTForImageClassification')")
            finally:
                browser.close()

        for i in code:
            if i > explore_at:
                client.execute_cell(nb.cells[i], i)
        assert "CLOSED" in _outputs(nb.cells[code[-1]])
    assert not _answers(url) and not _answers(url2), "close() must stop the servers"


# ------------------------------------------------------------------ without a kernel

class TinyViT(nn.Module):
    """A hand-written ViT (no library): 4x4 patches of 32 px, a CLS token, one attention layer."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.qkv = nn.Linear(16, 48)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        t = torch.cat([self.cls.expand(len(x), -1, -1), self.patch(x).flatten(2).transpose(1, 2)], 1)
        q, k, v = self.qkv(t).chunk(3, -1)
        a = (q @ k.transpose(1, 2) / 4).softmax(-1)
        return self.head((a @ v)[:, 0])


def _photo(seed: int = 0, size=(48, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def test_errors_say_what_to_pass(tmp_path):
    torch.manual_seed(0)
    m = TinyViT(2)
    with pytest.raises(NotAModelError, match="nn.Module"):
        show(object(), _photo())
    with pytest.raises(UnknownPreprocessingError, match="processor="):
        show(m, _photo())
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(ImageError, match="notes.jpg"):
        show(m, str(bad), processor={"input_size": 32})
    with pytest.raises(ImageError, match="no such file"):
        show(m, str(tmp_path / "absent.png"), processor={"input_size": 32})
    with pytest.raises(LabelsError, match="3 labels .* 2 classes"):
        show(m, _photo(), labels=["a", "b", "c"], processor={"input_size": 32})
    with pytest.raises(LabelsError, match="3 labels .* 2 classes"):
        explore(m, labels=["a", "b", "c"], processor={"input_size": 32})      # refused before serving
    import timm
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, num_classes=4, img_size=32)
    with pytest.raises(LabelsError, match="4 classes"):
        show(vit, _photo(), labels=["a", "b"])
    assert issubclass(NotAModelError, UserError) and issubclass(NotAModelError, TypeError)


def test_hand_written_model_with_a_dict_processor():
    """A model of your own: preprocessing from processor=, layout inferred, the map = the formula."""
    torch.manual_seed(1)
    m = TinyViT(2).train()
    photo = _photo(3, (64, 48))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    view = show(m, photo, labels=["yes", "no"], processor={"input_size": 32, "mean": mean, "std": std})
    assert m.training
    # the input written out: timm's resize (shorter side, bicubic) + centre crop at crop_pct 1 + normalise
    from timm.data import create_transform
    x = create_transform(input_size=(3, 32, 32), mean=mean, std=std, crop_pct=1.0, interpolation="bicubic")(
        Image.fromarray(photo)).unsqueeze(0)
    assert torch.equal(view.result.input, x)
    with torch.no_grad():
        m.eval()
        t = torch.cat([m.cls.expand(1, -1, -1), m.patch(x).flatten(2).transpose(1, 2)], 1)
        q, k, _ = m.qkv(t).chunk(3, -1)
        a = (q @ k.transpose(1, 2) / 4).softmax(-1)[0]
        p = m(x).softmax(-1)[0]
        m.train()
    assert np.allclose(view.grid[0][0], a[0, 1:].reshape(4, 4).numpy(), atol=1e-6)
    assert [d["label"] for d in view.predictions] == [["yes", "no"][i] for i in p.argsort(descending=True)]
    assert "<img" in view._repr_html_()


def test_show_a_capture_result_and_save(tmp_path):
    import timm
    torch.manual_seed(2)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=3, img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    res = capture(vit, x)
    view = show(res, _photo(4, (64, 64)), labels=["a", "b", "c"])
    assert np.allclose(view.heatmap, compute_map("rollout", res).maps[0].numpy())
    assert np.allclose(view.grid[1], res.maps[1].weights[0, :, 0, 1:].reshape(3, 4, 4).numpy())
    p = res.logits.softmax(-1)[0]
    assert view.predictions[0]["label"] == "abc"[int(p.argmax())]
    path = view.save(tmp_path / "view.html")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>") and view.html() in text
    _check_self_contained(text, 1 + 2 * 4)
    if not os.path.exists(CHROMIUM):
        return
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:        # the page's own script, in a browser, from the file (no server)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"file://{path}")
            cell = page.locator("tr[data-layer='1'] img").nth(2)
            cell.click()
            assert page.locator(".av-focus img").get_attribute("src") == cell.get_attribute("src")
            assert "layer 1" in page.locator(".av-focus .av-caption").inner_text()
            page.select_option("select.av-layer", "0")
            assert page.locator("tr[data-layer='0']").is_visible()
            assert not page.locator("tr[data-layer='1']").is_visible()
        finally:
            browser.close()


def test_torchvision_weights_transforms_and_explore_frees_the_model():
    """torchvision: the weights' documented transform; explore() on an object, close() lets it go."""
    import gc
    import weakref
    from torchvision.models import ViT_B_16_Weights
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(3)
    m = VisionTransformer(image_size=224, patch_size=32, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
                          num_classes=5)
    with pytest.raises(UnknownPreprocessingError, match="ViT_B_16_Weights"):
        show(m, _photo())
    photo = _photo(5, (300, 260))
    view = show(m, photo, processor=ViT_B_16_Weights.IMAGENET1K_V1)
    x = ViT_B_16_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(photo).permute(2, 0, 1)).unsqueeze(0)
    assert torch.allclose(view.result.input, x, atol=0.05)    # PIL vs tensor antialiasing: same geometry
    assert view.geometry.input_size == (224, 224) and len(view.grid) == 1
    app = explore(m, processor=ViT_B_16_Weights.IMAGENET1K_V1)
    assert app.name == "VisionTransformer" and _answers(app.url)
    ref = weakref.ref(m)
    app.close()
    assert not _answers(app.url)
    del m, view, app
    gc.collect()
    assert ref() is None, "the app still holds the model after close()"


def test_hugging_face_processor_saved_beside_the_model(tmp_path):
    """A model from a save_pretrained folder: its saved processor, no processor= needed; without one, a message."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    torch.manual_seed(4)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=8, num_labels=2, id2label={0: "left", 1: "right"}, label2id={"left": 0, "right": 1})
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "bare")
    with pytest.raises(UnknownPreprocessingError, match="processor=AutoImageProcessor"):
        show(ViTForImageClassification.from_pretrained(tmp_path / "bare"), _photo())
    proc = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.2, 0.2])
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "full")
    proc.save_pretrained(tmp_path / "full")
    model = ViTForImageClassification.from_pretrained(tmp_path / "full")
    photo = _photo(6, (50, 40))
    view = show(model, photo)
    px = proc(images=Image.fromarray(photo), return_tensors="pt")["pixel_values"]
    assert torch.allclose(view.result.input, px, atol=1e-6)
    with torch.no_grad():
        p = model(px).logits.softmax(-1)[0]
    assert view.predictions[0]["label"] == ["left", "right"][int(p.argmax())]
    with pytest.raises(LabelsError, match="3 labels .* 2 classes"):
        show(model, photo, labels=["a", "b", "c"])


def test_the_library_does_not_import_the_app():
    """`from attention import show` and a show() load neither viz_app nor Gradio (explore imports them on call)."""
    import subprocess
    import sys
    code = ("import sys, numpy as np, torch\n"
            "from attention import show\n"
            "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))\n"
            "show(m, np.zeros((20, 20, 3), np.uint8), processor={'input_size': 16}).html()\n"
            "print(sorted(n for n in ('viz_app', 'gradio') if n in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
