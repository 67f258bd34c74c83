"""Rendering: maps on the original photo, colour, the layer x head sheet, and PNG files.

- `overlay(image, heat, geometry, ...)`: a (gh, gw) map coloured and blended on the photo, placed
  through the exact inverse of the preprocessing (resize + crop); the cropped-away area is dimmed.
- `heat_on_photo(heat, geometry, ...)`: the same map resampled to the photo as float (NaN outside).
- `grid_sheet(image, maps, geometry, ...)`: every (layer, head) in one picture; `SheetLayout.cell_at`
  maps a click on it back to (layer, head | "fused").
- `write_pictures(...)`: the CLI's ``--overlays`` / ``--grid`` PNGs.
"""
from .colormap import DEFAULT_CMAP, apply_colormap, colorbar, colormap_lut, normalize_map
from .overlay import (MODES, grid_to_photo_matrix, heat_on_photo, mass_mask, overlay, patch_pixels, photo_to_patch,
                      seen_mask, upsample_to_photo)
from .grid import FUSED, SheetLayout, grid_cell_at, grid_sheet, sheet_layout
from .files import layer_head_maps, write_pictures

__all__ = ["DEFAULT_CMAP", "apply_colormap", "colorbar", "colormap_lut", "normalize_map", "MODES",
           "grid_to_photo_matrix", "heat_on_photo", "mass_mask", "overlay", "patch_pixels", "photo_to_patch",
           "seen_mask", "upsample_to_photo", "FUSED", "SheetLayout", "grid_cell_at", "grid_sheet", "sheet_layout",
           "write_pictures", "layer_head_maps"]

