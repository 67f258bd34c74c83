"""Seeing what a vision model attends to: capture, methods, rendering (no UI code here)."""
from .layout import TokenLayout, WindowInfo, ModelTokens
from .capture import AttentionMap, CaptureResult, AttentionCapture, capture, record_attention

__all__ = ["TokenLayout", "WindowInfo", "ModelTokens", "AttentionMap", "CaptureResult",
           "AttentionCapture", "capture", "record_attention"]
__version__ = "0.1.0"

# `from attention import show, explore` (attention.notebook): imported on first use, so that
# `import attention` stays light (the model loaders are imported only by those who use them)
_NOTEBOOK = ("show", "explore", "AttentionView")
__all__ += list(_NOTEBOOK)


def __getattr__(name):
    if name in _NOTEBOOK:
        from . import notebook
        return getattr(notebook, name)
    raise AttributeError(f"module 'attention' has no attribute {name!r}")
