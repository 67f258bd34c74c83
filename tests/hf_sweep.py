"""The transformers sweep: every vision model type of the installed ``transformers``, built tiny.

The types come from transformers' own auto mappings (`MAPPINGS`), so a type that a newer release adds is
swept without anyone listing it. Per type the class is the image classifier where there is one, else
the image model, the backbone, or (two-tower and mask-generation models) the vision tower. The config
is the type's default one shrunk by `tiny_config` (hidden 32, 2 layers, 32-64 px; hierarchical types
take `OVERRIDES`), random init. A type the sweep does not build is in `NOT_SWEPT` with the reason.

Two types need more than an image tensor and a row-major grid: Hiera's tokens are in its unrolled order
(checked against the unroll written out here, `hiera_sequence_cells`), and SigLIP 2 takes NaFlex inputs
(swept through the library's `NaFlexImageModel` on a non-square grid with padding, its reference the
bare model fed transformers' own patchify, `naflex_reference_inputs`).

``python -m tests.hf_sweep`` prints the table (type -> exact / refused with the reason).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

#: transformers' auto mappings whose types take an image
MAPPINGS = ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_MAPPING_NAMES",
            "MODEL_FOR_BACKBONE_MAPPING_NAMES", "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
            "MODEL_FOR_MASK_GENERATION_MAPPING_NAMES")
#: two-tower and mask-generation types: the vision tower is what attends over the picture
TOWER_MAPPINGS = ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_MASK_GENERATION_MAPPING_NAMES")

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
             patch_size=8, num_channels=3)


#: vision towers of types the image mappings do not list (GroupViT is a zero-shot segmenter)
EXTRA_TYPES = {"groupvit": ("GroupViTModel", "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES")}


def vision_types() -> dict[str, tuple[str, str]]:
    """{model type: (class name, mapping it came from)}, from the installed transformers' auto mappings."""
    from transformers.models.auto import modeling_auto as ma
    out: dict[str, tuple[str, str]] = dict(EXTRA_TYPES)
    for name in MAPPINGS:
        for t, cls in (getattr(ma, name, None) or {}).items():
            if t not in out:
                out[t] = (cls if isinstance(cls, str) else cls[0], name)
    return dict(sorted(out.items()))


def _tower_config_class(config_cls):
    sub = getattr(config_cls, "sub_configs", None) or {}
    cls = sub.get("vision_config")
    if getattr(cls, "__name__", "") == "AutoConfig":   # SAM 2, EdgeTAM: the spec names the tower's model type
        from transformers import CONFIG_MAPPING
        spec = (getattr(config_cls, "sub_configs_defaults", None) or {}).get("vision_config")
        cls = CONFIG_MAPPING[spec.model_type] if getattr(spec, "model_type", None) else None
    return cls


def model_class(model_type: str, class_name: str, mapping: str):
    """(model class, config class) that the sweep builds for a type."""
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.models.auto import modeling_auto as ma
    config_cls = CONFIG_MAPPING[model_type]
    if mapping in TOWER_MAPPINGS:
        vcls = _tower_config_class(config_cls)
        if vcls is None:
            raise LookupError(f"{config_cls.__name__} has no vision_config")
        vname = ma.MODEL_MAPPING_NAMES.get(getattr(vcls, "model_type", ""))
        cls = getattr(transformers, vname, None) if vname else None
        if cls is None:   # the tower class of the type's own module
            mod = importlib.import_module(getattr(transformers, class_name).__module__)
            cls = next((getattr(mod, n) for n in dir(mod) if n.endswith("VisionModel")), None)
        if cls is None:
            raise LookupError(f"no vision tower class for {model_type}")
        return cls, vcls
    return getattr(transformers, class_name), config_cls


#: per-type settings on top of `SMALL` (hierarchical types: stage lists; types whose defaults do not shrink)
_SWIN = dict(staged=True, image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)
_MIT = dict(staged=True, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
            strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2])
_RESNET = dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1],
               out_features=["stage4"])
_DETR = dict(staged=True, use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=_RESNET, d_model=16,
             encoder_layers=1, decoder_layers=1, num_queries=3, encoder_ffn_dim=16, decoder_ffn_dim=16,
             encoder_attention_heads=2, decoder_attention_heads=2,
             image_size=[96, 128])   # a 3 x 4 feature grid (stride 32): the probe sees real positions
OVERRIDES: dict[str, dict] = {
    "groupvit": dict(depths=[1, 1, 1], num_hidden_layers=3, num_group_tokens=[4, 2, 0], num_output_groups=[4, 2, 2]),
    "detr": _DETR, "table-transformer": _DETR, "conditional_detr": _DETR, "dab-detr": _DETR,
    "deformable_detr": dict(_DETR, num_feature_levels=1, backbone_config=dict(_RESNET, out_features=["stage4"]),
                            d_model=32),   # its input projection's GroupNorm has 32 groups
    "swin": _SWIN, "swinv2": _SWIN, "donut-swin": _SWIN, "maskformer-swin": _SWIN,
    "swin2sr": dict(staged=True, image_size=16, patch_size=1, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4,
                    upscale=1),
    "cvt": dict(staged=True, embed_dim=[16, 32], num_heads=[1, 2], depth=[1, 2], patch_sizes=[7, 3], patch_stride=[4, 2],
                patch_padding=[2, 1], mlp_ratio=[2.0, 2.0], attention_drop_rate=[0.0, 0.0], drop_rate=[0.0, 0.0],
                drop_path_rate=[0.0, 0.0], qkv_bias=[True, True], cls_token=[False, True],
                qkv_projection_method=["dw_bn", "dw_bn"], kernel_qkv=[3, 3], padding_kv=[1, 1], stride_kv=[2, 2],
                padding_q=[1, 1], stride_q=[1, 1]),
    "levit": dict(staged=True, image_size=64, patch_size=16, hidden_sizes=[16, 32], num_attention_heads=[1, 2], depths=[1, 1],
                  key_dim=[8, 8], mlp_ratio=[2, 2], attention_ratio=[2, 2], down_ops=[["Subsample", 8, 1, 2, 2, 2]]),
    "pvt": dict(staged=True, image_size=32, num_encoder_blocks=2, depths=[1, 1], sequence_reduction_ratios=[2, 1],
                hidden_sizes=[16, 32], patch_sizes=[4, 2], strides=[4, 2], num_attention_heads=[1, 2],
                mlp_ratios=[2, 2]),
    "pvt_v2": dict(_MIT, image_size=[32, 32], stage_names=["stage1", "stage2"], out_features=["stage2"]),
    "segformer": _MIT, "glpn": dict(_MIT, decoder_hidden_size=16),
    # Hiera as released: mask units of query_stride ** (stages - 1) tokens; mask-unit attention in stage 0,
    # then a pooling mask-unit layer, a global layer in the partly unrolled order, a pooling global layer
    "hiera": dict(staged=True, embed_dim=8, image_size=[64, 64], patch_size=[7, 7], patch_stride=[4, 4], patch_padding=[3, 3],
                  depths=[1, 2, 1], num_heads=[1, 2, 2], num_query_pool=2, masked_unit_size=[4, 4],
                  masked_unit_attention=[True, False, False], stage_names=["stem", "stage1", "stage2", "stage3"],
                  out_features=["stage3"]),
    "yolos": dict(image_size=[32, 48], num_detection_tokens=3),
    "vitdet": dict(image_size=40, pretrain_image_size=40, patch_size=4, window_size=4, window_block_indices=[0],
                   use_relative_position_embeddings=True, mlp_ratio=2),
    "sam": dict(image_size=40, patch_size=4, window_size=4, global_attn_indexes=[1], output_channels=16,
                              mlp_dim=64, num_pos_feats=8),
    "sam_hq": dict(image_size=40, patch_size=4, window_size=4, global_attn_indexes=[1],
                                 output_channels=16, mlp_dim=64, num_pos_feats=8),
    "lw_detr_vit": dict(image_size=64, pretrain_image_size=32, patch_size=8, num_windows=4, window_block_indices=[0],
                        mlp_ratio=2),
    "rf_detr_dinov2": dict(image_size=32, patch_size=4, num_windows=2, window_block_indexes=[0], mlp_ratio=2),
    "mobilevit": dict(staged=True, image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
                      num_attention_heads=2),
    "mobilevitv2": dict(staged=True, image_size=64, n_attn_blocks=[1, 1, 1], base_attn_unit_dims=[16, 16, 16], width_multiplier=0.25),
    "perceiver": dict(staged=True, num_latents=8, d_latents=32, d_model=32, num_self_attends_per_block=2,
                      num_self_attention_heads=2, num_cross_attention_heads=1, image_size=16),
    "imagegpt": dict(staged=True, n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=17),
    "timm_wrapper": dict(staged=True, architecture="test_vit",
                         pretrained_cfg=dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.875,
                                             crop_mode="center", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))),
    "timm_backbone": dict(staged=True, backbone="test_vit"),
    "siglip2.vision_config": dict(num_patches=16, patch_size=8),
    "swiftformer": dict(staged=True, image_size=32, depths=[1, 1, 1, 1], embed_dims=[8, 8, 16, 16]),
    # SAM 2's image encoder as released (Hiera-Det, Ryali et al. / Ravi et al. 2024): stages of 1, 2, 3, 1 blocks,
    # the first block of stages 1-3 pooling its queries, windows 4, 2, 4 per stage (stage 2's pad the 6 x 6 map to
    # 8 x 8, as 14 pads SAM 2's 64 x 64), one global block in stage 2; 96 px: grids 24, 12, 6, 3
    "sam2": dict(staged=True, backbone_config=dict(
        model_type="sam2_hiera_det_model", hidden_size=8, image_size=[96, 96], embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 2, 2, 2], blocks_per_stage=[1, 2, 3, 1], window_size_per_stage=[4, 2, 4, 2],
        global_attention_blocks=[4], mlp_ratio=2.0),
        backbone_channel_list=[64, 32, 16, 8], backbone_feature_sizes=[[24, 24], [12, 12], [6, 6]], fpn_hidden_size=16),
    # SAM 3 tracker's image encoder: SAM 3's ViT (windows of 4 on a 6 x 6 grid: padded to 8 x 8; layer 1 global)
    "sam3_tracker": dict(staged=True, backbone_config=dict(
        model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=48, patch_size=8, window_size=4, global_attn_indexes=[1], pretrain_image_size=32),
        fpn_hidden_size=16, backbone_feature_sizes=[[24, 24], [12, 12], [6, 6]]),
    # EdgeTAM's image encoder is timm's RepViT-M1 (features only), shrunk
    "edgetam": dict(staged=True, backbone_config=dict(
        model_type="timm_wrapper", architecture="repvit_m1",
        model_args=dict(in_chans=3, features_only=True, out_indices=[0, 1, 2, 3], embed_dim=(8, 16, 32, 64),
                        depth=(1, 1, 1, 1))),
        backbone_channel_list=[64, 32, 16, 8], backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=16),
}
#: sub-configs that transformers cannot build from a dict inside another config (timm_wrapper's num_labels)
_SUBCONFIG_OBJECTS = ("timm_wrapper",)
#: a tiny model has at most this many parameters (checked on the meta device before it is built)
MAX_PARAMS = 3_000_000


def _shrink(config_cls) -> dict:
    try:
        base = config_cls()
    except Exception:  # noqa: BLE001 - a config that needs arguments: SMALL as far as it takes them
        return dict(SMALL)
    return {k: v for k, v in SMALL.items() if hasattr(base, k)}


def tiny_config(model_type: str, config_cls):
    """The type's config, shrunk: `SMALL` where it has those names, then its `OVERRIDES` (also per sub-config)."""
    own = dict(OVERRIDES.get(model_type, {}))
    # staged types (lists per stage) take their own settings only: SMALL's names alias theirs
    kw = {} if own.pop("staged", False) else _shrink(config_cls)
    kw.update(own)
    for sub, sub_cls in (getattr(config_cls, "sub_configs", None) or {}).items():
        if isinstance(sub_cls, type) and sub not in kw and getattr(sub_cls, "model_type", ""):
            kw[sub] = {**_shrink(sub_cls), **OVERRIDES.get(f"{model_type}.{sub}", {})}
    for k, v in kw.items():
        if isinstance(v, dict) and v.get("model_type") in _SUBCONFIG_OBJECTS:
            from transformers import CONFIG_MAPPING
            kw[k] = CONFIG_MAPPING[v["model_type"]](**{a: b for a, b in v.items() if a != "model_type"})
    cfg = config_cls(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def build_tiny(model_type: str):
    """(model in eval mode, config) of one type, random init; LookupError / ValueError when it is not tiny."""
    class_name, mapping = vision_types()[model_type]
    cls, config_cls = model_class(model_type, class_name, mapping)
    cfg = tiny_config(model_type, config_cls)
    with torch.device("meta"):
        n = sum(p.numel() for p in cls(cfg).parameters())
    if n > MAX_PARAMS:
        raise ValueError(f"{cls.__name__} has {n / 1e6:.1f} M parameters with the shrunk config (add an OVERRIDES entry)")
    torch.manual_seed(0)
    return cls(cfg).eval(), cfg


def input_size(cfg) -> tuple[int, int]:
    vc = getattr(cfg, "vision_config", None) or cfg
    s = getattr(vc, "image_size", None)
    if s is None and getattr(vc, "model_type", "") == "sam2_vision_model":   # the size is the backbone's
        s = vc.backbone_config.image_size
    s = s or 32
    s = s if isinstance(s, (list, tuple)) else (s, s)
    return int(s[0]), int(s[1])


# ------------------------------------------------------------------------------------ the checks

TOL = 1e-5


@dataclass
class Row:
    """One type's outcome. ``status``: exact (every softmax equals the reference, every spatial map's
    geometry agrees with the probe), wrong, refused (with the reason), no-attention or not-swept."""

    model_type: str
    cls: str = ""
    status: str = ""
    detail: str = ""
    ops: int = 0
    ref_ops: int = 0
    max_err: float = 0.0
    layouts: dict = field(default_factory=dict)
    probes: int = 0
    loader: str = ""
    seconds: float = 0.0


def _tokens_of(h: torch.Tensor, count: int) -> Optional[torch.Tensor]:
    """(count,) change per token of a module input laid out as (X, N, C), (X, h, w, C), (X, C, h, w) or (X, C, P, N)."""
    h = h.detach().float()
    if h.dim() == 3 and h.shape[0] * h.shape[1] == count:
        return h.abs().sum(-1).reshape(-1)
    if h.dim() == 4 and h.shape[0] * h.shape[1] * h.shape[2] == count:
        return h.abs().sum(-1).reshape(-1)
    if h.dim() == 4 and h.shape[0] * h.shape[2] * h.shape[3] == count:
        return h.abs().sum(1).reshape(-1)
    if h.dim() == 4 and h.shape[0] * h.shape[3] == count:   # (X, C, P, N): MobileViTv2's unfolded patches
        return h.abs().sum((1, 2)).reshape(-1)
    return None


def query_grid(m):
    from attention.layout import WINDOW
    if m.kind == WINDOW:
        return m.window.grid if m.window is not None else None
    q = m.query_layout
    return q.grid if q is not None and q.num_patches else None


def expected_token(m, cell) -> int:
    """Index into the flattened (X * Nq) queries of the token at grid cell `cell`, by the map's layout."""
    from attention.layout import WINDOW
    if m.kind == WINDOW:
        w, p = m.window.locate(*cell)
        return w * m.weights.shape[-2] + p
    return m.query_layout.patch_index(*cell)


def _key_side(m) -> bool:
    """Probe the keys (pooling / class attention: its queries are learned or prefix tokens)."""
    return query_grid(m) is None and m.layout is not None and m.layout.num_patches > 0 and m.window is None


def probe_geometry(model, x, m) -> Optional[str]:
    """Independent check of where a map says its tokens are: perturb the input pixels of one grid cell
    and see which token of the attention module's own input changes most; None when that is the token
    the map's layout (or window geometry) puts at that cell, else what differs. Queries are probed where
    they lie on a grid, else the keys (pooling: latents or groups attending to the image)."""
    module = dict(model.named_modules()).get(m.name)
    keys = _key_side(m)
    grid = m.layout.grid if keys else query_grid(m)
    if module is None or grid is None:
        return "no module / no grid to probe"
    count = m.weights.shape[0] * m.weights.shape[-1 if keys else -2]
    calls = []
    hook = module.register_forward_pre_hook(lambda mod, a, kw: calls.append((a, kw)), with_kwargs=True)
    H, W = x.shape[-2:]
    cell = (grid[0] // 2, grid[1] // 2)
    sy, sx = H / grid[0], W / grid[1]
    x2 = x.clone()
    x2[..., int(cell[0] * sy):int((cell[0] + 1) * sy), int(cell[1] * sx):int((cell[1] + 1) * sx)] += 3.0
    try:
        kw = forward_kwargs(model, x)
        with torch.no_grad():
            model(x, **kw)
            n_calls = len(calls)
            model(x2, **kw)
    finally:
        hook.remove()
    # the same call of the module as the map (its first call), and its first tensor input of `count` tokens
    (a0, k0), (a1, k1) = calls[0], calls[n_calls]
    d = None
    for t0, t1 in zip(list(a0) + list(k0.values()), list(a1) + list(k1.values())):
        if isinstance(t0, torch.Tensor) and t0.is_floating_point() and t0.dim() >= 3 and t0.shape == t1.shape:
            diff = t1 - t0
            if getattr(model, "naflex", False) and diff.dim() == 3 and diff.shape[1] > count:
                diff = diff[:, :count]   # SigLIP 2: the padding tokens after the patches
            d = _tokens_of(diff, count)
            if d is not None:
                break
    if d is None:
        return f"no input of the module is {count} tokens"
    got = int(d.argmax())
    want = m.layout.patch_index(*cell) if keys else expected_token(m, cell)
    if got == want:
        return None
    if overlapping_stem(model):
        near = [(cell[0] + dy, cell[1] + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        near = [c for c in near if 0 <= c[0] < grid[0] and 0 <= c[1] < grid[1]]
        if got in {m.layout.patch_index(*c) if keys else expected_token(m, c) for c in near}:
            return None
    return f"cell {cell}: the layout says token {want}, the input changed most at {got}"


def reference_view(m, rec: torch.Tensor, cell) -> torch.Tensor:
    """The raw view (head mean, query at `cell`) written out from the reference record of the same op."""
    from attention.layout import WINDOW
    X, heads, nq, nk = m.weights.shape
    a = rec.reshape(X, heads, -1, rec.shape[-1]).mean(1)   # the record's size (NaFlex: padding too)
    if m.kind == WINDOW:
        info = m.window
        w, p = info.locate(*cell)
        out = torch.zeros(info.grid, dtype=a.dtype)
        for q in range(nk):
            pos = info.token_position(w, q)
            if pos is not None:
                out[pos] = a[w, p, q]
        return out
    row = a[0, m.query_layout.patch_index(*cell)]
    L = m.layout
    gh, gw = L.grid
    return torch.stack([torch.stack([row[L.patch_index(r, c)] for c in range(gw)]) for r in range(gh)])


def hiera_sequence_cells(grid: tuple[int, int], strides: list) -> list[int]:
    """Row-major cell number of each token of Hiera's unrolled sequence, written out from the paper's
    unroll (Ryali et al. 2023, "Hiera", Sec. 3 / its code), independently of the library's family.

    Each step with stride (sy, sx) sends token (y, x) of the current map to block (y mod sy, x mod sx), the
    slowest index, at (y div sy, x div sx) of the smaller map; so the token at (r, c) has sequence index
    u = ((o_1 * |s_2| + o_2) * |s_3| + ...) * (h * w) + y_k * w + x_k, with o_t = (y mod sy_t) * sx_t + x mod sx_t
    the offset at step t and (y_k, x_k) the position on the final (h, w) map."""
    H, W = grid
    h, w = H, W
    for sy, sx in strides:
        h, w = h // sy, w // sx
    out = [0] * (H * W)
    for r in range(H):
        for c in range(W):
            block, y, x = 0, r, c
            for sy, sx in strides:
                block = block * (sy * sx) + (y % sy) * sx + (x % sx)
                y, x = y // sy, x // sx
            out[block * (h * w) + y * w + x] = r * W + c
    return out


@dataclass
class HieraGeometry:
    """One Hiera attention module's input sequence (cell of each token on ``in_grid``), its windows and pooling."""

    in_cells: list
    in_grid: tuple
    q_grid: tuple
    windows: int
    pooled: bool


def hiera_geometry(model, name: str, hw: tuple[int, int]) -> Optional[HieraGeometry]:
    """What the sweep knows of a Hiera attention module from the config and the paper (None: not Hiera).

    Stage s's grid is the stem grid pooled min(s, num_query_pool) times; its tokens are unrolled with the
    strides the pooling has not consumed yet; a pooling layer (first of stages 1..num_query_pool) reads
    the previous stage's tokens; ``num_windows = N // (query_stride * window_size)`` with mask units."""
    cfg = getattr(model, "config", None)
    if type(cfg).__name__ != "HieraConfig" or ".stages." not in name:
        return None
    module = dict(model.named_modules())[name]
    parts = name.split(".")
    stage, layer = int(parts[parts.index("stages") + 1]), int(parts[parts.index("layers") + 1])
    qs = [int(v) for v in cfg.query_stride]
    ps = [int(v) for v in cfg.patch_stride]
    nqp = int(cfg.num_query_pool)

    def grid(s):
        k = min(s, nqp)
        return (hw[0] // ps[0] // qs[0] ** k, hw[1] // ps[1] // qs[1] ** k)
    pooled = int(module.query_stride) > 1
    src = stage - 1 if pooled and layer == 0 and stage > 0 else stage
    strides = [qs] * (len(cfg.depths) - 1)
    cells = hiera_sequence_cells(grid(src), strides[min(src, nqp):])
    n = len(cells)
    windows = n // (int(module.query_stride) * int(module.window_size)) if module.use_mask_unit_attn else 1
    return HieraGeometry(cells, grid(src), grid(stage), windows, pooled)


def hiera_query(geo: HieraGeometry, cell) -> tuple[int, int]:
    """(window, query index) of the recorded op for the query at `cell` of the query grid."""
    ry, rx = geo.in_grid[0] // geo.q_grid[0], geo.in_grid[1] // geo.q_grid[1]
    W = geo.in_grid[1]
    n_keys = len(geo.in_cells) // geo.windows
    n_q = n_keys // (ry * rx) if geo.pooled else n_keys
    for u, c in enumerate(geo.in_cells):
        if ((c // W) // ry, (c % W) // rx) == tuple(cell):
            w, i = u % geo.windows, u // geo.windows
            return w, i % n_q       # pooled: query j pools in-window indices k * n_q + j
    raise LookupError(cell)


def hiera_reference_view(geo: HieraGeometry, rec: torch.Tensor, heads: int, cell) -> torch.Tensor:
    """The raw view (head mean, query at `cell`) from the reference record (B, heads, windows, Nq, Nk) of a
    Hiera layer, its keys put at their cells by the independent unroll (zero outside the query's window)."""
    n_keys = len(geo.in_cells) // geo.windows
    a = rec.reshape(1, heads, geo.windows, -1, n_keys).mean(1)[0]
    w, j = hiera_query(geo, cell)
    out = torch.zeros(len(geo.in_cells), dtype=a.dtype)
    for k in range(n_keys):
        out[geo.in_cells[k * geo.windows + w]] = a[w, j, k]
    return out.view(*geo.in_grid)


def input_change(model, name: str, x: torch.Tensor, grid: tuple[int, int], cell) -> torch.Tensor:
    """How module `name`'s input (its ``hidden_states``, or first argument) changes when the pixels of `cell` of
    a `grid` laid over the image are raised by 3: the probes' perturbation."""
    module = dict(model.named_modules())[name]
    calls = []
    hook = module.register_forward_pre_hook(
        lambda mod, a, kw: calls.append(kw.get("hidden_states", a[0] if a else None)), with_kwargs=True)
    H, W = x.shape[-2:]
    sy, sx = H / grid[0], W / grid[1]
    x2 = x.clone()
    x2[..., int(cell[0] * sy):int((cell[0] + 1) * sy), int(cell[1] * sx):int((cell[1] + 1) * sx)] += 3.0
    try:
        with torch.no_grad():
            model(x)
            model(x2)
    finally:
        hook.remove()
    return calls[1] - calls[0]


def probe_hiera(model, x, m, geo: HieraGeometry, cell) -> Optional[str]:
    """Hiera's probe: perturb the pixels of one query-grid cell; the token of the module's (unrolled) input
    that changes most must lie in that cell by the independent unroll (a neighbour: the stem overlaps)."""
    u = int(input_change(model, m.name, x, geo.q_grid, cell).abs().sum(-1)[0].argmax())
    c = geo.in_cells[u]
    ry, rx = geo.in_grid[0] // geo.q_grid[0], geo.in_grid[1] // geo.q_grid[1]
    got = ((c // geo.in_grid[1]) // ry, (c % geo.in_grid[1]) // rx)
    if max(abs(got[0] - cell[0]), abs(got[1] - cell[1])) <= (1 if overlapping_stem(model) else 0):
        return None
    return f"cell {tuple(cell)}: the unrolled input changed most at token {u}, which the unroll puts at {got}"


@dataclass
class Sam2Geometry:
    """One pooling block of SAM 2's Hiera-Det: its input grid, pooled query grid, window (0: global), stride."""

    in_grid: tuple
    q_grid: tuple
    window: int
    stride: tuple


def sam2_geometry(model, name: str, hw: tuple[int, int]) -> Optional[Sam2Geometry]:
    """What the sweep knows of a query-pooling block of SAM 2's image encoder, from the config alone (None: not
    one): block i is in stage t (``blocks_per_stage``); its window is the previous stage's where it is the
    first block of a stage (0 for the ``global_attention_blocks``); the first block of stages
    1..num_query_pool_stages max-pools its queries by ``query_stride`` (floor); the stem grid is the patch
    convolution's output ``(H + 2p - k) // s + 1``."""
    top = getattr(model, "config", None)
    cfg = getattr(getattr(top, "vision_config", None) or top, "backbone_config", None)   # a whole Sam2Model too
    if getattr(cfg, "model_type", "") != "sam2_hiera_det_model" or ".blocks." not in f".{name}":
        return None
    parts = name.split(".")
    i = int(parts[parts.index("blocks") + 1])
    ends = [sum(cfg.blocks_per_stage[:t + 1]) for t in range(len(cfg.blocks_per_stage))]
    t = next(t for t, e in enumerate(ends) if i < e)
    first = i == (ends[t - 1] if t else 0)
    pooled = first and 0 < t <= int(cfg.num_query_pool_stages)
    if not pooled:
        return None
    window = 0 if i in cfg.global_attention_blocks else int(cfg.window_size_per_stage[t - 1])
    k, st, pd = (list(v) if isinstance(v, (list, tuple)) else [v, v]
                 for v in (cfg.patch_kernel_size, cfg.patch_stride, cfg.patch_padding))
    qs = list(cfg.query_stride) if isinstance(cfg.query_stride, (list, tuple)) else [cfg.query_stride] * 2
    g = [(hw[a] + 2 * pd[a] - k[a]) // st[a] + 1 for a in (0, 1)]
    for _ in range(t - 1):   # the pooling blocks of the stages before
        g = [g[0] // qs[0], g[1] // qs[1]]
    return Sam2Geometry(tuple(g), (g[0] // qs[0], g[1] // qs[1]), window, (qs[0], qs[1]))


def sam2_key_cell(geo: Sam2Geometry, w: int, p: int) -> Optional[tuple[int, int]]:
    """Input-grid cell of key p of window w (windows row-major over the map padded bottom / right), or None
    for a padding token."""
    if not geo.window:
        return divmod(p, geo.in_grid[1])
    ws = geo.window
    wy, wx = divmod(w, -(-geo.in_grid[1] // ws))
    r, c = wy * ws + p // ws, wx * ws + p % ws
    return (r, c) if r < geo.in_grid[0] and c < geo.in_grid[1] else None


def sam2_query(geo: Sam2Geometry, cell) -> tuple[int, int]:
    """(window, query index) of the recorded op for the pooled query at `cell` of the query grid: the pooled
    window is ``window // stride`` queries a side, row-major, windows as on the input grid."""
    if not geo.window:
        return 0, cell[0] * geo.q_grid[1] + cell[1]
    qh, qw = geo.window // geo.stride[0], geo.window // geo.stride[1]
    n_wx = -(-geo.in_grid[1] // geo.window)
    return (cell[0] // qh) * n_wx + cell[1] // qw, (cell[0] % qh) * qw + cell[1] % qw


def sam2_reference_view(geo: Sam2Geometry, rec: torch.Tensor, heads: int, cell) -> torch.Tensor:
    """The raw view (head mean, query at `cell`) from the reference record (B·nW, heads, nq, nk) of a SAM 2
    pooling block, its keys put at their input-grid cells (zero outside the query's window, padding dropped)."""
    nk = rec.shape[-1]
    w, j = sam2_query(geo, cell)
    if geo.window:
        nq = (geo.window // geo.stride[0]) * (geo.window // geo.stride[1])
    else:
        nq = geo.q_grid[0] * geo.q_grid[1]
    a = rec.reshape(-1, heads, nq, nk).mean(1)        # (B·nW, nq, nk), B = 1
    out = torch.zeros(geo.in_grid, dtype=a.dtype)
    for p in range(nk):
        pos = sam2_key_cell(geo, w, p)
        if pos is not None:
            out[pos] = a[w, j, p]
    return out


def probe_sam2(model, x, m, geo: Sam2Geometry, cell) -> Optional[str]:
    """SAM 2 pooling block's probe: perturb the pixels of one query-grid cell; the token of the module's input
    (windows or the whole map) that changes most must lie, by the partition written out here, in that cell's
    ``stride`` block of the input grid (a neighbour: the stem overlaps)."""
    d = input_change(model, m.name, x, geo.q_grid, cell).abs().sum(-1)    # (B·nW, ws, ws) or (B, H, W)
    u = int(d.reshape(-1).argmax())
    per = d.shape[1] * d.shape[2]
    pos = sam2_key_cell(geo, u // per, u % per)
    if pos is None:
        return f"cell {tuple(cell)}: the input changed most at a padding token ({u})"
    got = (pos[0] // geo.stride[0], pos[1] // geo.stride[1])
    if max(abs(got[0] - cell[0]), abs(got[1] - cell[1])) <= (1 if overlapping_stem(model) else 0):
        return None
    return f"cell {tuple(cell)}: the input changed most at token {u}, which the partition puts at {pos}"


def forward_kwargs(model, x) -> dict:
    """What the plain forwards (reference, probe) pass so that they compute what a capture shows: ViTMAE
    unmasked and in order (its capture does the same, `attention.families.hf_masked`)."""
    from attention.families.hf_masked import masking_embeddings
    emb = masking_embeddings(model)
    if emb is None:
        return {}
    emb.config.mask_ratio = 0.0
    p = emb.config.patch_size
    n = (x.shape[-2] // p) * (x.shape[-1] // p)
    return {"noise": torch.arange(n, dtype=torch.float32).expand(x.shape[0], n)}


def naflex_reference_inputs(x: torch.Tensor, patch_size: int, max_num_patches: int) -> dict:
    """SigLIP 2's three inputs for an image tensor, made by the processor's own functions
    (``convert_image_to_patches``, ``pad_along_first_dim``), independently of the library's wrapper."""
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches, pad_along_first_dim
    patches, mask = pad_along_first_dim(convert_image_to_patches(x[0], patch_size), max_num_patches)
    shape = (x.shape[-2] // patch_size, x.shape[-1] // patch_size)
    return {"pixel_values": patches[None], "pixel_attention_mask": mask[None],
            "spatial_shapes": torch.tensor([shape], dtype=torch.long)}


def _reference(model, x):
    from tests.attention_reference import AtenAttentionRecorder
    kw = forward_kwargs(model, x)
    rec = AtenAttentionRecorder()
    with torch.no_grad(), rec:
        if getattr(model, "naflex", False):   # the bare model, fed what the processor makes of x
            model.model(**naflex_reference_inputs(x, model.patch_size, model.max_num_patches))
        else:
            model(x, **kw)
    return None, rec


def check_model(row: Row, model, x) -> tuple:
    """Capture vs the aten reference, then per spatial layout the geometry probe and one raw view."""
    from attention import capture
    from attention.layout import UNKNOWN
    from attention.methods.raw import raw_attention
    _, ref = _reference(model, x)
    res = capture(model, x)
    recs = [m for m in res.records if m.op in ("softmax", "sdpa")]
    row.ops, row.ref_ops = len(recs), len(ref.records)
    errs = []
    for got, want in zip(recs, ref.records):
        g = got.weights.double().reshape(-1, got.weights.shape[-1])
        errs.append(float((g - want).abs().max()) if g.shape == want.shape else float("inf"))
    row.max_err = max(errs, default=0.0)
    problems = []
    if row.ops != row.ref_ops:
        problems.append(f"captured {row.ops} attention ops, the reference {row.ref_ops}")
    if row.max_err > TOL:
        problems.append(f"max error {row.max_err:.1e}")
    rec_of = {id(m): r for m, r in zip(recs, ref.records)}
    seen_geometry = set()
    unplaced = []
    for i, m in enumerate(res.maps):
        key = f"{m.kind}:{m.layout_source}"
        row.layouts[key] = row.layouts.get(key, 0) + 1
        sgeo = sam2_geometry(model, m.name, tuple(x.shape[-2:])) if m.is_spatial else None
        if sgeo is not None:   # pooled queries of SAM 2: probe and raw view by the independent partition
            cell = (sgeo.q_grid[0] // 2, sgeo.q_grid[1] // 2)
            why = probe_sam2(model, x, m, sgeo, cell)
            row.probes += 1
            got = raw_attention(res, i, "mean", cell)[0].double()
            record = [r for r in res.records if r.name == m.name][-1]   # after the unused heads x heads softmax
            want = sam2_reference_view(sgeo, rec_of[id(record)], m.num_heads, cell)
            if why is not None:
                problems.append(f"{m.name} ({m.kind}): {why}")
            elif got.shape != want.shape or float((got - want).abs().max()) > TOL:
                problems.append(f"{m.name}: the raw view differs from the reference record placed by the partition")
            continue
        geo = hiera_geometry(model, m.name, tuple(x.shape[-2:])) if m.is_spatial else None
        if geo is not None:   # unrolled tokens: probe and raw view by the independent unroll
            cell = (geo.q_grid[0] // 2, geo.q_grid[1] // 2)
            why = probe_hiera(model, x, m, geo, cell)
            row.probes += 1
            got = raw_attention(res, i, "mean", cell)[0].double()
            want = hiera_reference_view(geo, rec_of[id(res.records[i])], m.num_heads, cell)
            if why is not None:
                problems.append(f"{m.name} ({m.kind}): {why}")
            elif got.shape != want.shape or float((got - want).abs().max()) > TOL:
                problems.append(f"{m.name}: the raw view differs from the reference record placed by the unroll")
            continue
        if not m.is_spatial:
            if m.layout_source == UNKNOWN:   # a map the family could not place: not its true geometry
                unplaced.append(m.name)
            continue
        grid = m.layout.grid if _key_side(m) else query_grid(m)
        sig = (m.kind, grid, m.window.to_dict().__repr__() if m.window is not None else None)
        if grid is None or sig in seen_geometry:
            continue
        seen_geometry.add(sig)
        why = probe_geometry(model, x, m)
        row.probes += 1
        if why is not None:
            problems.append(f"{m.name} ({m.kind}): {why}")
            continue
        if id(m) in rec_of and not _key_side(m):
            cell = (grid[0] // 2, grid[1] // 2)
            got = raw_attention(res, i, "mean", cell)[0].double()
            want = reference_view(m, rec_of[id(m)], cell)
            if got.shape != want.shape or float((got - want).abs().max()) > TOL:
                problems.append(f"{m.name}: the raw view differs from the reference record")
    if unplaced:
        problems.append(f"{len(unplaced)} of {len(res.maps)} maps have no layout ({unplaced[0]}, ...)")
    return problems, res


# ------------------------------------------------------------------------------------ the sweep

#: types the sweep does not build, each with the reason
NOT_SWEPT: dict[str, str] = {}
# each reason starts with the words the loader's refusal of such a folder names (tests/test_hf_not_swept.py)
_VIDEO = "a video model: its input is frames (B, T, 3, H, W), not one image"
_VLM = "a vision-language model: the image tower runs inside a language model with its own inputs"
for _t in ("timesformer", "videomae", "vivit", "videoprism", "videoprism_vision_model", "sam2_video",
           "edgetam_video", "sam3_video"):
    NOT_SWEPT[_t] = _VIDEO
for _t in ("cohere2_vision", "llama4", "mllama", "shieldgemma2"):
    NOT_SWEPT[_t] = _VLM
NOT_SWEPT["deformable_detr"] = ("multi-scale deformable attention: its softmax is over sampling offsets per query, "
                                 "not over the positions of the image")
NOT_SWEPT["dinat"] = "needs the natten package: neighbourhood attention kernels, not installed"

_ATTENTION_SOURCE = None


def computes_attention(cls) -> bool:
    """Whether the module that defines `cls` can compute softmax attention at all (a softmax, SDPA or
    transformers' attention interface in its source); CNN types are named, not built."""
    import inspect
    import re
    global _ATTENTION_SOURCE
    if _ATTENTION_SOURCE is None:
        _ATTENTION_SOURCE = re.compile(r"softmax|scaled_dot_product|ALL_ATTENTION_FUNCTIONS|eager_attention_forward|"
                                       r"AutoBackbone|load_backbone|timm", re.I)
    return bool(_ATTENTION_SOURCE.search(inspect.getsource(importlib.import_module(cls.__module__))))


def meta_attention_ops(cls, config_cls) -> int:
    """Softmax / SDPA ops of one forward of the type's *default* config on the meta device (no memory,
    no arithmetic): how a type too big to build tiny is shown to have no attention."""
    from tests.attention_reference import reference_attention
    cfg = config_cls()
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        model = cls(cfg).eval()
        x = torch.zeros(1, 3, *input_size(cfg))
    _, rec = reference_attention(model, x)
    return len(rec.records)


def overlapping_stem(model) -> bool:
    """Whether the first convolution's kernel is larger than its stride or it pads (overlapping or shifted
    receptive fields: a token's field spills over its cell, so the probe accepts a neighbouring cell's token)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        return False
    pad = conv.padding if isinstance(conv.padding, tuple) else (1, 1)   # "same": padded
    return any(k > s or p > 0 for k, s, p in zip(conv.kernel_size, conv.stride, pad))


def sweep_type(model_type: str) -> Row:
    row = Row(model_type)
    t0 = time.perf_counter()
    try:
        if model_type in NOT_SWEPT:
            row.status, row.detail = "not swept", NOT_SWEPT[model_type]
            return row
        class_name, mapping = vision_types()[model_type]
        cls, _ = model_class(model_type, class_name, mapping)
        row.cls = cls.__name__
        if not computes_attention(cls):
            row.status, row.detail = "no attention", f"{cls.__module__.split('.')[-1]} computes no softmax attention"
            return row
        try:
            model, cfg = build_tiny(model_type)
        except Exception as e:  # noqa: BLE001 - a CNN whose config does not shrink: show it has no attention
            try:
                n_ops = meta_attention_ops(cls, model_class(model_type, class_name, mapping)[1])
            except Exception:  # noqa: BLE001
                raise e from None
            if n_ops:
                raise
            row.status, row.detail = "no attention", "a meta-device forward of its default config runs no softmax"
            return row
        if getattr(model, "main_input_name", "pixel_values").endswith("_ids"):   # ImageGPT: colour-cluster ids
            from tests.hf_sweep_colour_clusters import sweep_colour_clusters
            sweep_colour_clusters(row, model, cfg)
            return row
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, *input_size(cfg), generator=g)
        raw_model, naflex = model, naflex_settings(model_type, cfg)
        if naflex is not None:   # SigLIP 2: a non-square 3 x 5 patch grid, one padding patch of 16
            from attention.families.hf_siglip2 import NaFlexImageModel
            model = NaFlexImageModel(model, *naflex)
            x = torch.randn(1, 3, 3 * naflex[0], 5 * naflex[0], generator=g)
        try:
            problems, res = check_model(row, model, x)
        except Exception as e:  # noqa: BLE001 - a shrunk CNN config that does not run: no attention?
            try:
                n_ops = meta_attention_ops(cls, model_class(model_type, class_name, mapping)[1])
            except Exception:  # noqa: BLE001
                raise e from None
            if n_ops:
                raise
            row.status, row.detail = "no attention", "a meta-device forward of its default config runs no softmax"
            return row
        if row.ref_ops == 0:
            row.status, row.detail = "no attention", "the forward computes no softmax attention"
        elif problems:
            row.status, row.detail = "wrong", "; ".join(problems)
        else:
            row.status = "exact"
        if row.ref_ops:
            row.loader = loader_check(model_type, raw_model, cfg)
    except Exception as e:  # noqa: BLE001 - reported in the table; the test fails on it
        row.status, row.detail = "error", f"{type(e).__name__}: {str(e).splitlines()[0][:240] if str(e) else ''}"
    finally:
        row.seconds = time.perf_counter() - t0
    return row


def _processor_class(model_type: str):
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
    entry = IMAGE_PROCESSOR_MAPPING[CONFIG_MAPPING[model_type]]
    cls = (entry.get("torchvision") or entry.get("pil")) if isinstance(entry, dict) else entry
    if isinstance(cls, (tuple, list)):
        cls = next((c for c in cls if c is not None), None)
    return cls


def naflex_settings(model_type: str, cfg) -> Optional[tuple[int, int]]:
    """(patch size, max_num_patches) of a type whose processor is NaFlex (picks a patch grid per photo:
    SigLIP 2), from the tiny config (max_num_patches = its position table's size), else None."""
    try:
        cls = _processor_class(model_type)
    except KeyError:
        return None
    if cls is None or getattr(cls, "max_num_patches", None) is None:
        return None
    vc = getattr(cfg, "vision_config", None) or cfg
    return int(vc.patch_size), int(vc.num_patches)


def processor_for(model_type: str, hw: tuple[int, int], cfg=None):
    """The type's own image processor class (transformers' mapping) set to the tiny model's input size, or None."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
    if model_type == "timm_wrapper":   # its processor is timm's data config, in config.json
        return None
    naflex = naflex_settings(model_type, cfg) if cfg is not None else None
    if naflex is not None:
        return _processor_class(model_type)(patch_size=naflex[0], max_num_patches=naflex[1])
    try:
        entry = IMAGE_PROCESSOR_MAPPING[CONFIG_MAPPING[model_type]]
    except KeyError:   # no processor of its own: what a user would save with it
        from transformers import ViTImageProcessor
        return ViTImageProcessor(size={"height": hw[0], "width": hw[1]})
    cls = (entry.get("torchvision") or entry.get("pil")) if isinstance(entry, dict) else entry
    if isinstance(cls, (tuple, list)):
        cls = next((c for c in cls if c is not None), None)
    if cls is None:
        return None
    for size in ({"height": hw[0], "width": hw[1]}, {"shortest_edge": hw[0]}):
        try:
            proc = cls(size=size, do_center_crop=False)
            proc(images=_photo(), return_tensors="pt")
            return proc
        except Exception:  # noqa: BLE001 - the next way of saying the size
            continue
    return cls()


def _photo():
    import numpy as np
    from PIL import Image
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))


def loader_check(model_type: str, model, cfg) -> str:
    """Through the real loading path: save_pretrained (+ the type's processor) -> `load_model(folder)` ->
    prepare a photo -> capture equals the reference. "exact", "refused: <the loader's message>" or what failed."""
    import tempfile
    from attention.errors import CheckpointError
    from attention.models import load_model
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        proc = processor_for(model_type, input_size(cfg), cfg)
        if proc is not None:
            proc.save_pretrained(folder)
        try:
            lm = load_model(folder)
            x = lm.prepare(_photo()).tensor
        except CheckpointError as e:
            return f"refused: {e}"
        naflex = naflex_settings(model_type, cfg)
        if naflex is not None:   # the prepared image is what the processor's patches tile, its grid theirs
            out = proc(images=_photo(), return_tensors="pt")
            mine = naflex_reference_inputs(x, *naflex)
            if not all(torch.equal(mine[k].to(out[k].dtype), out[k]) for k in out):
                return "the prepared image does not give the processor's patches, mask and spatial_shapes"
        elif proc is not None:
            want = proc(images=_photo(), return_tensors="pt")["pixel_values"].float()
            if not torch.equal(x, want):
                return "the prepared pixels differ from the processor's"
        row = Row(model_type)
        problems, _ = check_model(row, lm.model, x)
        return "; ".join(problems) if problems else "exact"


def line(r: Row) -> str:
    lay = ", ".join(f"{k} x{v}" for k, v in sorted(r.layouts.items()))
    return (f"| {r.model_type} | {r.cls} | {r.status} | {r.ops}/{r.ref_ops} | {r.max_err:.0e} | {lay} | {r.probes} | "
            f"{r.loader} | {r.detail} |")


def main():
    import warnings
    import transformers
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    rows = []
    print(f"transformers {transformers.__version__}\n")
    print("| type | class | status | ops / reference | max error | layouts | probes | loader | detail |")
    print("|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for t in vision_types():
        rows.append(sweep_type(t))
        print(line(rows[-1]), flush=True)
    counts = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"\n{len(rows)} types: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) +
          f" ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()


def quiet_two_threads():
    """A module fixture body for the transformers tests: two torch threads, transformers' logging quiet;
    both restored after the module (``_quiet = pytest.fixture(autouse=True, scope="module")(quiet_two_threads)``)."""
    import transformers
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(level)
    torch.set_num_threads(old)
