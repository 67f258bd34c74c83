"""Which query (row of an attention matrix) a map is read from.

A query is one of

* a prefix token by name: ``"cls"``, ``"dist"``, ``"reg0"`` … (whatever the layout names), or several
  joined by ``+`` (``"cls+dist"``: the mean of both rows, the faithful choice for distilled DeiT whose
  prediction averages the CLS and DIST heads);
* ``"prefix_mean"``: the mean over all prefix rows; ``"patch_mean"``: the mean over all patch rows;
* ``"auto"``: ``"cls"`` where the layout has a CLS token, else ``"patch_mean"``;
* ``(row, col)``: the patch at that cell of the layout's grid (the patch → patch view).

`query_weights` turns a query into a weight vector ``q`` over the tokens (summing to 1), so that the
map read from a matrix ``M`` (tokens × keys) is ``qᵀ M``.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from ..errors import MethodNotDefinedError
from ..layout import TokenLayout

Query = Union[str, Sequence[int]]


def resolve_query(layout: TokenLayout, query: Query) -> Query:
    """``"auto"`` → ``"cls"`` or ``"patch_mean"``; everything else unchanged."""
    if isinstance(query, str) and query == "auto":
        return "cls" if layout.cls_index is not None else "patch_mean"
    return query


def query_indices(layout: TokenLayout, query: Query, what: str = "this model") -> list[int]:
    """Token indices whose rows are averaged for `query` (raises MethodNotDefinedError if absent)."""
    query = resolve_query(layout, query)
    if not isinstance(query, str):
        row, col = (int(v) for v in query)
        if layout.num_patches == 0:
            raise MethodNotDefinedError(f"{what} has no patch queries")
        return [layout.patch_index(row, col)]
    if query == "prefix_mean":
        if layout.num_prefix == 0:
            raise MethodNotDefinedError(f"{what} has no prefix tokens (CLS, DIST, registers) to average")
        return list(range(layout.num_prefix))
    if query == "patch_mean":
        if layout.num_patches == 0:
            raise MethodNotDefinedError(f"{what} has no patch queries")
        return list(range(layout.patch_slice.start, layout.patch_slice.stop))
    out = []
    for name in query.split("+"):
        i = layout.index(name.strip())
        if i is None:
            have = ", ".join(layout.prefix_names) or "none"
            raise MethodNotDefinedError(
                f"{what} has no {name.strip()!r} token (its prefix tokens: {have}); use 'patch_mean' or a "
                f"(row, col) patch query instead")
        out.append(i)
    return out


def query_weights(layout: TokenLayout, query: Query, what: str = "this model", dtype=torch.float32,
                  device=None) -> torch.Tensor:
    """(num_tokens,) weights, uniform over the query's rows, zero elsewhere."""
    idx = query_indices(layout, query, what)
    q = torch.zeros(layout.num_tokens, dtype=dtype, device=device)
    q[idx] = 1.0 / len(idx)
    return q
