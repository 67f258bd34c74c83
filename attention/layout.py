"""Token layouts: which token of an attention matrix is what, and where it sits on the image.

Every captured attention matrix is described by a `TokenLayout` for its keys (and, for non-square
attention, another for its queries). Prefix tokens (CLS, DIST, registers) come first, then the
``gh * gw`` patch tokens in row-major order: that is how timm, torchvision and ``nn.TransformerEncoder``
ViTs lay them out. A few models append special tokens *after* the patches (YOLOS's detection tokens,
GroupViT's group tokens): those are the layout's ``suffix_names``, so the patches are
``tokens[patch_slice]``, not "everything after the prefix".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# What a captured matrix is. Only "self" maps can be chained by rollout.
SELF = "self"          # square token x token attention over one shared layout
CLASS = "class"        # queries are the prefix tokens only (CaiT class attention)
WINDOW = "window"      # Swin: per window, (B * nW, heads, n, n), see `WindowInfo`
REDUCED = "reduced"    # spatial-reduction attention (PVT, Twins): keys on a coarser grid
CHANNEL = "channel"    # XCiT cross-covariance attention: channel x channel, not spatial
POOLING = "pooling"    # one learned query over the positions of a feature map
TOKENS = "tokens"      # attention among tokens that are no image positions (GroupViT's groups, Perceiver's latents)
KINDS = (SELF, CLASS, WINDOW, REDUCED, CHANNEL, POOLING, TOKENS)

# How a map's layout was found.
KNOWN = "known"        # from the model's family descriptor: exact
INFERRED = "inferred"  # fitted to the shapes (prefix + grid matching the input's aspect ratio): a best guess
UNKNOWN = "unknown"    # nothing fits: a token x token matrix only
LAYOUT_SOURCES = (KNOWN, INFERRED, UNKNOWN)


@dataclass(frozen=True)
class TokenLayout:
    """Prefix tokens, a ``grid`` of patch tokens, then ``suffix_names`` tokens (usually none).

    ``stride`` is the size in model-input pixels of one grid cell (the patch size for a ViT, the
    feature stride for a CNN), so grid cell (i, j) covers input rows ``i*sy .. (i+1)*sy``.
    """

    prefix_names: tuple[str, ...]
    grid: tuple[int, int]
    stride: tuple[float, float]
    suffix_names: tuple[str, ...] = ()

    @property
    def num_prefix(self) -> int:
        return len(self.prefix_names)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_suffix(self) -> int:
        return len(self.suffix_names)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches + self.num_suffix

    @property
    def patch_slice(self) -> slice:
        """Where the patch tokens are in the sequence: ``tokens[patch_slice]`` (row-major grid)."""
        return slice(self.num_prefix, self.num_prefix + self.num_patches)

    @property
    def special_names(self) -> tuple[str, ...]:
        """Every token that is not a patch, in sequence order (prefix, then suffix)."""
        return self.prefix_names + self.suffix_names

    def special_indices(self) -> list[int]:
        """Sequence indices of the tokens that are not patches (prefix, then suffix)."""
        return list(range(self.num_prefix)) + list(range(self.patch_slice.stop, self.num_tokens))

    def index(self, name: str) -> Optional[int]:
        """Index of a special token by name ("cls", "dist", "reg0", "det0", ...), or None."""
        if name in self.prefix_names:
            return self.prefix_names.index(name)
        if name in self.suffix_names:
            return self.patch_slice.stop + self.suffix_names.index(name)
        return None

    @property
    def cls_index(self) -> Optional[int]:
        return self.index("cls")

    @property
    def registers(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.prefix_names) if n.startswith("reg"))

    def patch_index(self, row: int, col: int) -> int:
        """Token index of the patch at grid cell (row, col)."""
        gh, gw = self.grid
        if not (0 <= row < gh and 0 <= col < gw):
            raise IndexError(f"patch ({row}, {col}) is outside the {gh}x{gw} grid")
        return self.num_prefix + row * gw + col

    def to_dict(self) -> dict:
        d = {
            "prefix_names": list(self.prefix_names),
            "num_prefix_tokens": self.num_prefix,
            "grid": list(self.grid),
            "stride": list(self.stride),
        }
        if self.suffix_names:
            d["suffix_names"] = list(self.suffix_names)
        return d


@dataclass(frozen=True)
class WindowInfo:
    """How per-window matrices (Swin and other windowed attention) map back to the stage's token grid.

    The block rolls the (H, W) map by ``-shift``, pads it to ``padded``, and cuts it into windows of
    ``window`` tokens (timm's order; ``roll_after_pad=True``: pads first and rolls the padded map, as
    torchvision does). Window ``w = wy * nWw + wx``, in-window index ``p = py * ww + px`` is the
    shifted position ``(sy, sx) = (wy*wh + py, wx*ww + px)``, i.e. original token
    ``((sy + shift_y) mod H, (sx + shift_x) mod W)`` when inside ``H x W`` (else padding); with
    ``roll_after_pad`` the modulus is the padded size.
    """

    window: tuple[int, int]
    shift: tuple[int, int]
    grid: tuple[int, int]      # stage grid (H, W) before padding
    padded: tuple[int, int]    # (Hp, Wp) after padding to whole windows
    roll_after_pad: bool = False

    @property
    def windows_per_image(self) -> int:
        return (self.padded[0] // self.window[0]) * (self.padded[1] // self.window[1])

    def _modulus(self) -> tuple[int, int]:
        return self.padded if self.roll_after_pad else self.grid

    def token_position(self, window_index: int, in_window: int) -> Optional[tuple[int, int]]:
        """(row, col) on the stage grid of a window token, or None for a padding token."""
        wh, ww = self.window
        n_wx = self.padded[1] // ww
        wy, wx = divmod(window_index, n_wx)
        py, px = divmod(in_window, ww)
        sy, sx = wy * wh + py, wx * ww + px
        if self.roll_after_pad:
            r, c = (sy + self.shift[0]) % self.padded[0], (sx + self.shift[1]) % self.padded[1]
            return (r, c) if r < self.grid[0] and c < self.grid[1] else None
        if sy >= self.grid[0] or sx >= self.grid[1]:
            return None
        return ((sy + self.shift[0]) % self.grid[0], (sx + self.shift[1]) % self.grid[1])

    def locate(self, row: int, col: int) -> tuple[int, int]:
        """(window index, in-window index) that holds stage-grid token (row, col)."""
        H, W = self._modulus()
        wh, ww = self.window
        sy, sx = (row - self.shift[0]) % H, (col - self.shift[1]) % W
        wy, py = divmod(sy, wh)
        wx, px = divmod(sx, ww)
        return wy * (self.padded[1] // ww) + wx, py * ww + px

    def to_dict(self) -> dict:
        d = {"window": list(self.window), "shift": list(self.shift),
             "grid": list(self.grid), "padded": list(self.padded)}
        if self.roll_after_pad:
            d["roll_after_pad"] = True
        return d

    @property
    def tokens_per_window(self) -> int:
        """Tokens in each window's sequence (the last two dims of its attention matrix)."""
        return self.window[0] * self.window[1]

    def positions(self) -> tuple[tuple[int, ...], ...]:
        """Per window, per in-window token: its flat stage-grid index ``row * W + col``, -1 for padding or a
        token that is no position."""
        W = self.grid[1]
        return tuple(tuple(-1 if (pos := self.token_position(w, p)) is None else pos[0] * W + pos[1]
                           for p in range(self.tokens_per_window)) for w in range(self.windows_per_image))


@dataclass(frozen=True)
class TokenWindows(WindowInfo):
    """Windows whose tokens are listed one by one, for windows that are no shifted rectangles of the grid or
    that carry tokens of their own: ``table[w][p]`` is the flat stage-grid index ``row * W + col`` of
    in-window token ``p`` of window ``w``, or -1 for a token that is no position (e.g. the window's own CLS
    token); those tokens are named, per window and in sequence order, in ``special[w]``.

    RF-DETR's windowed DINOv2 is the case: each window is ``[CLS, its patches]`` and its global layers attend
    over the windows' sequences joined (one "window" holding every window's CLS and patches). The base
    fields keep their meaning where they have one (``grid``: the stage grid; ``window``: the nominal
    window size; ``shift`` (0, 0); ``padded`` = ``grid``).
    """

    table: tuple[tuple[int, ...], ...] = field(default=(), repr=False)
    special: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self):
        n = len(self.table[0]) if self.table else 0
        if not self.table or any(len(t) != n for t in self.table):
            raise ValueError("TokenWindows needs one token list per window, all of the same length")
        where = {}
        for w, t in enumerate(self.table):
            for p, flat in enumerate(t):
                if flat >= 0:
                    if flat in where:
                        raise ValueError(f"grid cell {divmod(flat, self.grid[1])} is in two windows' tokens")
                    where[flat] = (w, p)
        if len(self.special) != len(self.table) or any(
                len(names) != sum(f < 0 for f in t) for names, t in zip(self.special, self.table)):
            raise ValueError("TokenWindows.special names each window's tokens that are no position, in order")
        object.__setattr__(self, "_where", where)

    @property
    def windows_per_image(self) -> int:
        return len(self.table)

    @property
    def tokens_per_window(self) -> int:
        return len(self.table[0])

    def token_position(self, window_index: int, in_window: int) -> Optional[tuple[int, int]]:
        flat = self.table[window_index][in_window]
        return None if flat < 0 else divmod(flat, self.grid[1])

    def locate(self, row: int, col: int) -> tuple[int, int]:
        H, W = self.grid
        if not (0 <= row < H and 0 <= col < W) or row * W + col not in self._where:
            raise IndexError(f"patch ({row}, {col}) is in no window of the {H}x{W} grid")
        return self._where[row * W + col]

    def positions(self) -> tuple[tuple[int, ...], ...]:
        return self.table

    def special_tokens(self, window_index: int) -> list[tuple[int, str]]:
        """(in-window index, name) of window ``window_index``'s tokens that are no position."""
        names = iter(self.special[window_index])
        return [(p, next(names)) for p, flat in enumerate(self.table[window_index]) if flat < 0]

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(tokens_per_window=self.tokens_per_window, table=[list(t) for t in self.table],
                 special=[list(s) for s in self.special])
        return d


@dataclass(frozen=True)
class ModelTokens:
    """What a model's token sequence looks like for one input size (before any attention layer)."""

    prefix_names: tuple[str, ...] = ()
    grid: Optional[tuple[int, int]] = None
    stride: tuple[float, float] = (1.0, 1.0)
    extra: dict = field(default_factory=dict)
    suffix_names: tuple[str, ...] = ()   # tokens after the patches (YOLOS's detection tokens)

    def layout(self) -> TokenLayout:
        return TokenLayout(self.prefix_names, self.grid or (0, 0), self.stride, self.suffix_names)
