"""torchvision's Swin v1/v2 (``swin_t``, ``swin_v2_t``, ...): ``shifted_window_attention`` is a function.

The softmax runs inside ``torchvision.models.swin_transformer.shifted_window_attention``, which pads
the (B, H, W, C) map to whole windows *first* and then rolls the padded map (timm rolls first), and
zeroes the shift of a window as large as the map. The descriptor reads those facts from the
function's own frame (its ``input``, ``window_size`` and effective ``shift_size``).
"""
from __future__ import annotations

from torch import nn

from ..layout import KNOWN, WINDOW, ModelTokens, TokenLayout, WindowInfo
from . import register_family
from .base import Family, MapSpec


@register_family
class TorchvisionSwin(Family):
    name = "torchvision-swin"
    priority = 40

    def matches(self, model: nn.Module) -> bool:
        return type(model).__module__ == "torchvision.models.swin_transformer" and type(model).__name__ == "SwinTransformer"

    def tokens(self, model, hw):
        conv = model.features[0][0]
        s = conv.stride
        return ModelTokens((), (hw[0] // s[0], hw[1] // s[1]), (float(s[0]), float(s[1])))

    def describe(self, session, module, weights, site):
        f = site.frame
        loc = f.f_locals if f.f_code.co_name == "shifted_window_attention" else {}
        if "input" not in loc:
            return super().describe(session, module, weights, site)
        _, H, W, _ = loc["input"].shape
        wh, ww = (int(v) for v in loc["window_size"])
        shift = tuple(int(v) for v in loc["shift_size"])
        padded = (H + (wh - H % wh) % wh, W + (ww - W % ww) % ww)
        info = WindowInfo((wh, ww), shift, (int(H), int(W)), padded, roll_after_pad=True)
        return MapSpec(WINDOW, TokenLayout((), info.grid, session.stride_for(info.grid)), window=info, source=KNOWN)

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        return model.features[-1][-1].norm1
