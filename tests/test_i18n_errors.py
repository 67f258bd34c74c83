"""The errors a user meets through the page's inputs, in the page's language (#26, app half): hostile files given
to the image input and to 'Your own model' go through the page's real handlers (`Events.call`), and the one
warning toast each leaves is read. On a Chinese page the toast is Chinese (no Latin word outside the allow-list;
file names and paths are fields, quoted in backticks), carries the same numbers and names as the English one, and
the English toast is word for word the text the command line and the API have always shown (`str(e)`).
Also: every ``*.said("key", ...)`` in the code names a key every catalogue has, with the fields it is given."""
from __future__ import annotations

import ast
import os
import pathlib
import re
import struct
import zipfile
import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.i18n import LANGUAGES, catalogue, placeholders
from attention.i18n.fonts import needs_cjk
from attention.images import MAX_BYTES, MAX_PIXELS, MIN_SIDE
from attention.models import demo_names
from tests.i18n_support import latin_words
from viz_app import inputs
from viz_app.callbacks import Callbacks
from viz_app.models import ModelManager
from viz_app.page import Page
from viz_app.state import SessionStore

pytestmark = pytest.mark.skipif("demo-vit" not in demo_names(), reason="bundled demo models missing")

ROOT = pathlib.Path(__file__).resolve().parents[1]
STILL_USING = {"en": " — still using demo-vit.", "zh-CN": " —— 仍在使用 demo-vit。"}


@pytest.fixture(scope="module")
def app():
    from viz_app.ui import build_demo
    return build_demo(Callbacks(ModelManager(max_models=3), SessionStore()), default_model="demo-vit")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(3), 64, CLASS_NAMES.index("star"))
    path = tmp_path_factory.mktemp("errors") / "star_1.png"
    Image.fromarray(img).save(path)
    return str(path)


def toast(app, handler, lang: str, session: str, **values) -> str:
    """The one warning toast `handler` leaves on a page in `lang` (gr.Warning is a UserWarning outside a
    server); the handler refused the event: nothing on the page changed."""
    page = Page("demo-vit", lang=lang)
    with pytest.warns(UserWarning) as rec:
        out = app.viz_events.call(handler, page, session, **values)
    said = [str(w.message) for w in rec if issubclass(w.category, UserWarning) and "gradio" not in str(w.message)]
    assert len(said) == 1, said
    assert out["page"].model == "demo-vit"
    return said[0]


def numbers(text: str) -> Counter:
    return Counter(re.findall(r"\d+(?:[.,]\d+)*", text))


def both(app, handler, session: str, **values) -> tuple[str, str]:
    """(English toast, Chinese toast) of the same input, with what every Chinese message must be."""
    en = toast(app, handler, "en", f"{session}-en", **values)
    zh = toast(app, handler, "zh-CN", f"{session}-zh", **values)
    assert needs_cjk(zh), zh
    assert latin_words(zh) == set(), (zh, latin_words(zh))
    assert numbers(zh) == numbers(en), (en, zh)          # the same sizes, counts and limits in both languages
    for field in re.findall(r"`([^`]+)`", zh):           # names, paths, commands: word for word as in English
        assert field in en, (field, en)
    return en, zh


def image(app, path: str, session: str) -> tuple[str, str]:
    return both(app, inputs.on_image, session, image_in=path)


def custom(app, session: str, ckpt_file=None, ckpt_path="", labels_file=None, arch=inputs.FROM_CHECKPOINT):
    en, zh = both(app, inputs.on_custom, session, arch_dd=arch, ckpt_file=ckpt_file, ckpt_path=ckpt_path,
                  labels_file=labels_file, live_cb=False)
    assert en.endswith(STILL_USING["en"]) and zh.endswith(STILL_USING["zh-CN"]), (en, zh)
    return en[:-len(STILL_USING["en"])], zh[:-len(STILL_USING["zh-CN"])]


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A small PNG file claiming `width` x `height` pixels (its one data chunk holds a few rows only)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4096)))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- the image input

def test_documents_archives_and_vector_images_are_refused_in_the_pages_language(app, tmp_path):
    pdf = tmp_path / "homework_1.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
    en, zh = image(app, str(pdf), "pdf")
    assert en == "homework_1.pdf: this is a PDF document, not an image"
    assert zh == "`homework_1.pdf`：这是 PDF 文档，不是图像"

    archive = tmp_path / "photos_2.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("cat_1.png", b"not really")
    en, zh = image(app, str(archive), "zip")
    assert en == "photos_2.zip: this is a zip archive, not an image"
    assert "`photos_2.zip`" in zh and "压缩包" in zh

    svg = tmp_path / "drawing_3.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle r="20"/></svg>')
    en, zh = image(app, str(svg), "svg")
    assert en == "drawing_3.svg: SVG vector images are not supported; export it as PNG first"
    assert "`drawing_3.svg`" in zh and "PNG" in zh


def test_empty_undecodable_truncated_and_tiny_images_say_what_is_wrong(app, tmp_path, photo):
    empty = tmp_path / "empty_1.png"
    empty.write_bytes(b"")
    en, zh = image(app, str(empty), "empty")
    assert en == "empty_1.png: the file is empty (0 bytes)"
    assert zh == "`empty_1.png`：文件为空（0 字节）"

    noise = tmp_path / "noise_2.png"
    noise.write_bytes(np.random.default_rng(0).integers(1, 255, 4096, dtype=np.uint8).tobytes())
    en, zh = image(app, str(noise), "noise")
    assert en == "noise_2.png: not an image file that can be decoded (unknown or unsupported format)"

    whole = pathlib.Path(photo).read_bytes()
    cut = tmp_path / "cut_3.png"
    cut.write_bytes(whole[:len(whole) // 2])
    en, zh = image(app, str(cut), "cut")
    m = re.fullmatch(r"cut_3\.png: the image data is damaged or truncated \((.+)\)", en)
    assert m, en
    assert f"（`{m.group(1)}`）" in zh and "截断" in zh        # the decoder's own words kept as a field

    tiny = tmp_path / "tiny_4.png"
    Image.fromarray(np.zeros((1, 5, 3), np.uint8)).save(tiny)
    en, zh = image(app, str(tiny), "tiny")
    assert en == f"tiny_4.png: 5x1 pixels is too small; each side needs at least {MIN_SIDE} pixels"
    assert zh == f"`tiny_4.png`：5x1 像素太小；每条边至少需要 {MIN_SIDE} 像素"


def test_size_and_pixel_limits_carry_their_numbers(app, tmp_path):
    bomb = tmp_path / "bomb_1.png"
    bomb.write_bytes(png_header(20000, 20000))
    en, zh = image(app, str(bomb), "bomb")
    assert en == (f"bomb_1.png: 20000x20000 pixels is over the limit of {MAX_PIXELS:,} pixels "
                  f"(possible decompression bomb)")
    assert f"20000x20000 像素超过了 {MAX_PIXELS:,} 像素的上限" in zh

    huge = tmp_path / "huge_2.png"
    with open(huge, "wb") as f:           # sparse: the size is checked before anything is read
        f.truncate(MAX_BYTES + 3 * 2**20)
    en, zh = image(app, str(huge), "huge")
    mb = (MAX_BYTES + 3 * 2**20) / 2**20
    assert en == f"huge_2.png: file is {mb:.0f} MB, over the {MAX_BYTES // 2**20} MB limit"
    assert zh == f"`huge_2.png`：文件大小为 {mb:.0f} MB，超过了 {MAX_BYTES // 2**20} MB 的上限"


def test_a_folder_or_a_missing_file_as_the_image(app, tmp_path):
    folder = tmp_path / "album_1"
    folder.mkdir()
    en, zh = image(app, str(folder), "folder")
    assert en == f"{folder}: is a directory, not an image file"
    assert zh == f"`{folder}`：这是一个文件夹，不是图像文件"
    gone = tmp_path / "gone_2.png"
    en, zh = image(app, str(gone), "gone")
    assert en == f"{gone}: no such file" and f"`{gone}`" in zh


# --------------------------------------------------------------------------- 'Your own model'

def test_files_that_are_not_weights_are_refused_in_the_pages_language(app, tmp_path):
    text = tmp_path / "notes_1.pth"
    text.write_text("epoch 1: loss 0.93\nepoch 2: loss 0.71\n")
    en, zh = custom(app, "text", ckpt_file=str(text))
    assert en == "notes_1.pth is a text file, not a checkpoint (weights are binary: .safetensors, .pth, .pt, .bin)"
    assert "`notes_1.pth`" in zh and "文本文件" in zh and "检查点" in zh

    empty = tmp_path / "empty_2.pth"
    empty.write_bytes(b"")
    en, zh = custom(app, "empty", ckpt_file=str(empty))
    assert en == "empty_2.pth is empty (0 bytes): the upload or download did not finish"
    assert zh == "`empty_2.pth` 是空文件（0 字节）：上传或下载没有完成"

    page = tmp_path / "login_3.safetensors"
    page.write_text("<!DOCTYPE html><html><body>Please sign in</body></html>")
    en, zh = custom(app, "html", ckpt_file=str(page))
    assert en == ("login_3.safetensors is a web page (HTML), not a checkpoint — probably a download that saved an "
                  "error or login page instead of the file")
    assert "网页" in zh

    pointer = tmp_path / "model_4.bin"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 1234\n")
    en, zh = custom(app, "lfs", ckpt_file=str(pointer))
    assert en == ("model_4.bin is a Git LFS pointer, not the weights: fetch the real file (`git lfs pull`) and "
                  "load that")
    assert "`git lfs pull`" in zh


def test_a_truncated_checkpoint_and_one_no_architecture_fits(app, tmp_path):
    full = tmp_path / "full.pth"
    torch.save({"blocks.0.weight": torch.randn(64, 64), "blocks.0.bias": torch.randn(64)}, full)
    cut = tmp_path / "cut_1.pth"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    en, zh = custom(app, "cut", ckpt_file=str(cut))
    m = re.fullmatch(r"cannot read checkpoint cut_1\.pth: it is truncated or corrupt \((.+)\) — an incomplete "
                     r"upload or download\?", en)
    assert m, en
    assert f"（`{m.group(1)}`）" in zh and "检查点" in zh

    odd = tmp_path / "odd_2.pth"
    torch.save({"foo.weight": torch.randn(3, 5)}, odd)
    en, zh = custom(app, "arch", ckpt_file=str(odd))
    assert en == ("odd_2.pth does not say which architecture it was trained with (no timm 'arch' / 'args.model', no "
                  "Lightning hyper_parameters naming a model) and no timm architecture fits its weight shapes: give "
                  "the architecture name (e.g. --model vit_small_patch16_224)")
    assert "架构" in zh and "`odd_2.pth`" in zh


def test_no_checkpoint_a_missing_path_and_a_folder_without_config(app, tmp_path):
    en, zh = custom(app, "none", ckpt_file=None)
    assert en == "choose a checkpoint file (.safetensors, .pth, .pt or .bin) to upload"
    assert zh == "请选择要上传的检查点文件（.safetensors、.pth、.pt 或 .bin）"
    gone = tmp_path / "gone_1.pth"
    en, zh = custom(app, "gone", ckpt_path=str(gone))
    assert en == f"{gone}: no such file or folder on this machine" and f"`{gone}`" in zh
    folder = tmp_path / "run_2"
    folder.mkdir()
    en, zh = custom(app, "folder", ckpt_path=str(folder))
    assert en == ("run_2 is a folder without config.json: give a checkpoint file, a Hugging Face save_pretrained "
                  "folder or an .onnx file")
    assert "config.json" in zh and "文件夹" in zh


@pytest.fixture(scope="module")
def demo_weights(app, tmp_path_factory):
    """demo-vit's own weights saved as a user's checkpoint, and its number of classes."""
    loaded = app.viz_callbacks.manager.get("demo-vit")
    path = tmp_path_factory.mktemp("weights") / "demo_vit_1.pth"
    torch.save(loaded.model.state_dict(), path)
    return str(path), len(loaded.class_names)


def test_bad_labels_files_are_refused_in_the_pages_language(app, tmp_path, demo_weights):
    weights, n_classes = demo_weights
    broken = tmp_path / "labels_1.json"
    broken.write_text('["cat", "dog",')
    en, zh = custom(app, "json", ckpt_file=weights, labels_file=str(broken), arch="demo-vit")
    m = re.fullmatch(r"labels file labels_1\.json is not valid JSON: (.+)", en)
    assert m, en
    assert zh == f"类别名文件 `labels_1.json` 不是有效的 JSON：`{m.group(1)}`"

    short = tmp_path / "labels_2.txt"
    short.write_text("cat\ndog\nteapot\n")
    en, zh = custom(app, "count", ckpt_file=weights, labels_file=str(short), arch="demo-vit")
    assert en == f"labels file labels_2.txt has 3 names but the model has {n_classes} classes"
    assert zh == f"类别名文件 `labels_2.txt` 有 3 个类别名，但模型有 {n_classes} 个类别"

    latin1 = tmp_path / "labels_3.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    en, zh = custom(app, "utf8", ckpt_file=weights, labels_file=str(latin1), arch="demo-vit")
    assert en == "labels file labels_3.txt is not UTF-8 text"
    assert zh == "类别名文件 `labels_3.txt` 不是 UTF-8 文本"


def test_weights_of_another_shape_name_what_does_not_fit(app, tmp_path, demo_weights):
    weights, _ = demo_weights
    sd = torch.load(weights, weights_only=True)
    first = next(iter(sd))
    sd["extra_head.weight"] = sd.pop(first)
    other = tmp_path / "other_1.pth"
    torch.save(sd, other)
    en, zh = custom(app, "fit", ckpt_file=str(other), arch="demo-vit")
    assert en == f"checkpoint does not fit demo-vit: 1 missing keys: {first}; 1 unexpected keys: extra_head.weight"
    assert zh == (f"检查点与 `demo-vit` 不匹配（缺少的键、多出的键或形状不符的权重）："
                  f"`1 missing keys: {first}; 1 unexpected keys: extra_head.weight`")


def test_a_pickle_that_would_run_code_is_refused_with_its_way_out_in_chinese(app, tmp_path):
    marker = tmp_path / "ran_1"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "trained_1.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": Payload()}, evil)
    en, zh = custom(app, "pickle", ckpt_file=str(evil))
    assert not marker.exists()
    assert en.startswith("refused to load trained_1.pth: it holds objects of type ") and "system" in en
    assert "'state_dict' (1 tensors)" in en and en.endswith("load weights.pth")
    command = ("python -c \"import torch; c = torch.load('trained_1.pth', weights_only=False); "
               "torch.save(c['state_dict'], 'weights.pth')\"")
    assert command in en and f"`{command}`" in zh          # the same way out, word for word, in both
    assert "拒绝加载 `trained_1.pth`" in zh and "`'state_dict' (1 tensors)`" in zh


# --------------------------------------------------------------------------- the model menu

def test_a_name_typed_in_the_model_menu_that_is_no_model(app):
    """The menu takes a typed name: an unknown one is named, and the name forms (each source's own notation,
    the command line's --model help) follow word for word in both languages."""
    from attention.models import name_syntax
    page = Page("demo-vit", lang="zh-CN")
    with pytest.warns(UserWarning) as rec:
        out = app.viz_events.call(inputs.on_model, page, "menu-zh", model_dd="no_such_model_1")
    zh = [str(w.message) for w in rec if issubclass(w.category, UserWarning)][-1]
    assert out["model_dd"]["value"] == "demo-vit"
    head, forms = zh.split("\n", 1)
    assert head == "未知模型 `'no_such_model_1'`；模型名称须为以下写法之一："
    assert forms == name_syntax("  - ") + STILL_USING["zh-CN"]
    with pytest.warns(UserWarning) as rec:
        app.viz_events.call(inputs.on_model, Page("demo-vit"), "menu-en", model_dd="no_such_model_1")
    en = [str(w.message) for w in rec if issubclass(w.category, UserWarning)][-1]
    assert en == f"unknown model 'no_such_model_1'; a model name is one of:\n{name_syntax('  - ')}" + STILL_USING["en"]


def test_an_overlong_name_in_the_model_menu(app):
    en, zh = both(app, inputs.on_model, "long", model_dd="x" * 400)
    assert en == "a model name of 400 characters: pick one in the model list" + STILL_USING["en"]
    assert zh == "模型名称长达 400 个字符：请在模型列表中选择一个" + STILL_USING["zh-CN"]


def test_a_camera_frame_on_a_model_that_cannot_be_had_says_why_in_the_caption(app):
    """The live tab's caption says a failure (no toast per frame); the error came through a `user_facing`
    method as a gr.Error, which keeps its catalogue text and is said in the page's language."""
    from attention.i18n import t
    from viz_app.tabs import live
    frame = np.zeros((64, 64, 3), np.uint8)
    name = "y" * 301
    said = {}
    for lang in ("en", "zh-CN"):
        out = app.viz_events.call(live.on_live, Page(name, lang=lang), f"live-{lang}", live_cam=frame)
        said[lang] = out["live_md"]
    why = {lang: t("app.models.name_too_long", lang, length=301) for lang in said}
    assert why["en"] == "a model name of 301 characters: pick one in the model list"
    assert why["en"] in said["en"] and why["zh-CN"] in said["zh-CN"]
    assert needs_cjk(said["zh-CN"]) and latin_words(said["zh-CN"]) == set(), said["zh-CN"]


# --------------------------------------------------------------------------- every said() names a real text

def said_calls():
    """(file, line, key, field names or None when given as **kwargs) of every ``X.said("key", ...)`` call."""
    for path in list((ROOT / "attention").rglob("*.py")) + list((ROOT / "viz_app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "said"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and "." in node.args[0].value and " " not in node.args[0].value):
                names = None if any(k.arg is None for k in node.keywords) else {k.arg for k in node.keywords}
                yield path.relative_to(ROOT), node.lineno, node.args[0].value, names


def test_every_said_error_names_a_text_of_every_catalogue_with_its_fields():
    calls = [c for c in said_calls() if c[2].split(".")[0] in ("images", "checkpoint", "labels", "models", "app")]
    keys = {c[2] for c in calls}
    assert {"images.pdf", "checkpoint.onnx", "labels.count", "app.models.path_refused"} <= keys
    for lang in LANGUAGES:
        table = catalogue(lang)
        for path, line, key, names in calls:
            assert key in table, f"{path}:{line}: no text {key!r} in the {lang} catalogue"
            if names is not None:
                wanted = {name for name, _ in placeholders(table[key])}
                assert wanted <= names, f"{path}:{line}: {key!r} needs {wanted - names}"


ERROR_FILES = ("attention/images.py", "attention/models/checkpoint.py", "attention/models/labels.py",
               "attention/models/__init__.py", "viz_app/models.py", "viz_app/callbacks.py")


def error_keys_written() -> set[str]:
    """The catalogue keys the input errors' modules write (in a said() call or chosen before it)."""
    key = re.compile(r"(?:images|checkpoint|labels|models|app\.models|app\.callbacks)\.[a-z_]+")
    written = set()
    for name in ERROR_FILES:
        for node in ast.walk(ast.parse((ROOT / name).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and key.fullmatch(node.value):
                written.add(node.value)
    return written


def test_every_error_key_written_in_the_code_is_in_every_catalogue():
    """Keys chosen before the call (``{"empty": "checkpoint.empty", ...}[kind]``) are string constants too."""
    written = error_keys_written()
    assert {"checkpoint.empty", "checkpoint.text", "checkpoint.html", "checkpoint.lfs"} <= written
    for lang in LANGUAGES:
        assert written <= set(catalogue(lang)), (lang, written - set(catalogue(lang)))


def test_the_catalogues_error_texts_have_no_english_in_chinese():
    """Every error text the input modules say: Chinese, with no Latin word but the fields (``{name}``)."""
    zh = catalogue("zh-CN")
    keys = [k for k in error_keys_written() if k.startswith(("images.", "checkpoint.", "labels.", "models.",
                                                             "app.models.", "app.callbacks."))]
    assert len(keys) >= 60
    for key in keys:
        text = re.sub(r"\{[^{}]*\}", "0", zh[key])
        assert needs_cjk(text) and latin_words(text) == set(), (key, zh[key], latin_words(text))
