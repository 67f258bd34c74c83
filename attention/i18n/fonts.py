"""The font the lesson's Chinese pictures are drawn with: Noto Sans SC, from a package on the package index.

Never a system font: the font comes from the ``pylopdf-fonts-zh-cn`` wheel (Noto Sans SC Regular, SIL Open
Font License 1.1, the notofonts/noto-cjk release), found by its path and registered with matplotlib by path
(`register_cjk_font`). Latin text keeps DejaVu Sans (shipped with matplotlib); matplotlib (>= 3.6) falls back
glyph by glyph along `MPL_FAMILY`, so a Chinese sentence with "softmax" or "q·k" in it draws both scripts.
PIL pictures (`attention.lesson.figure.Canvas`) draw a string that needs CJK glyphs entirely in Noto Sans SC
(which has Latin letters, digits and the math signs the lesson uses).
"""
from __future__ import annotations

import functools
import re
import threading

CJK_FAMILY = "Noto Sans SC"
LATIN_FAMILY = "DejaVu Sans"
MPL_FAMILY = [LATIN_FAMILY, CJK_FAMILY]       # matplotlib's per-glyph fallback order
FONT_PACKAGE = "pylopdf-fonts-zh-cn"
_lock = threading.Lock()
# CJK ideographs, CJK punctuation and full-width forms: what DejaVu Sans lacks in a Chinese sentence
_CJK = re.compile(r"[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u31a0-\u31bf\u3400-\u4dbf"
                  r"\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")


class FontMissingError(RuntimeError):
    """The CJK font package is not installed."""


def needs_cjk(text) -> bool:
    """Whether `text` has a character only a CJK font draws."""
    return bool(_CJK.search(str(text)))


def is_cjk_char(ch: str) -> bool:
    return bool(_CJK.match(ch))


@functools.lru_cache(maxsize=None)
def cjk_font_path() -> str:
    """Path of Noto Sans SC Regular (an .otf) from the installed font package."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        raise FontMissingError(f"the Chinese pictures need the font package {FONT_PACKAGE} (Noto Sans SC, OFL): "
                               f"pip install {FONT_PACKAGE}") from None
    import os
    path = str(pylopdf_fonts_zh_cn.sans_path())
    if not os.path.isfile(path):
        raise FontMissingError(f"{FONT_PACKAGE} is installed but {path} is missing: reinstall it")
    return path


_registered = False


def register_cjk_font() -> str:
    """Add Noto Sans SC to matplotlib's font list by path (once); returns its family name."""
    global _registered
    if not _registered:
        with _lock:
            if not _registered:
                from matplotlib import font_manager
                font_manager.fontManager.addfont(cjk_font_path())
                _registered = True
    return CJK_FAMILY


@functools.lru_cache(maxsize=4)
def cmap_of(path: str) -> frozenset:
    """The code points a font file maps to a glyph (its best cmap)."""
    from matplotlib.ft2font import FT2Font
    return frozenset(FT2Font(path).get_charmap().keys())


@functools.lru_cache(maxsize=None)
def latin_font_path(bold: bool = False) -> str:
    from matplotlib import font_manager
    return font_manager.findfont(font_manager.FontProperties(family=LATIN_FAMILY,
                                                             weight="bold" if bold else "normal"),
                                 fallback_to_default=False)


__all__ = ["CJK_FAMILY", "LATIN_FAMILY", "MPL_FAMILY", "FONT_PACKAGE", "FontMissingError", "needs_cjk",
           "is_cjk_char", "cjk_font_path", "register_cjk_font", "cmap_of", "latin_font_path"]
