"""Seeing what a vision model attends to: capture, methods, rendering (no UI code here)."""
from .layout import TokenLayout, WindowInfo, ModelTokens
from .capture import AttentionMap, CaptureResult, AttentionCapture, capture, record_attention

__all__ = ["TokenLayout", "WindowInfo", "ModelTokens", "AttentionMap", "CaptureResult",
           "AttentionCapture", "capture", "record_attention"]
__version__ = "0.1.0"
