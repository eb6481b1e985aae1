"""The kinds of decomposition and their spelling: KLW's type A (p x p, p x p x q) and type B, or
explicit boxes (JSON). ``make`` turns a user's string into a ``Decomposition``."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ddmlflow.errors import InputError, require

from .boxes import Box, Decomposition, check_image_shape, check_overlap, load_json, parse_boxes

SPECS = (
    '"PxP" (2D), "PxPxQ" (3D; "PxP" means PxPx1), "typeB" (also "type-B", "B"), '
    'a JSON list of boxes [[y0,x0,y1,x1], ...] (3D: six numbers), {"boxes": [...]} or a .json file'
)


def _parse(spec: str) -> tuple[str, Any]:
    """The one grammar: ("A", parts) | ("B", None) | ("json", {"boxes": ..., ...}); else InputError."""
    s = str(spec).strip()
    if re.fullmatch(r"(type[ _-]?)?b", s, re.I):
        return "B", None
    if re.fullmatch(r"\d+(\s*x\s*\d+)+", s, re.I):
        return "A", [int(p) for p in re.split(r"\s*x\s*", s, flags=re.I)]
    if s.startswith(("{", "[")) or s.lower().endswith(".json") or os.path.isfile(s):
        d = load_json(s)
        d = {"boxes": d} if isinstance(d, list) else d
        require(
            isinstance(d, dict) and isinstance(d.get("boxes"), list),
            "decomposition",
            spec,
            'JSON must be a list of boxes or {"boxes": [[start..., stop...] or {"start": [...], "stop": [...]}, ...]}',
        )
        return "json", d
    raise InputError("decomposition", spec, f"allowed: {SPECS}")


def check_spec(spec: str) -> str:
    """Check a decomposition's spelling before any data is loaded (the data's shape is checked by ``make``)."""
    kind, d = _parse(spec)
    if kind == "A":
        require(
            len(d) in (2, 3) and all(p >= 1 for p in d) and any(p > 1 for p in d),
            "decomposition",
            spec,
            f"PxP or PxPxQ with counts >= 1, at least one >= 2; allowed: {SPECS}",
        )
    if kind == "json":
        for nd in (2, 3):  # boxes of a 2D or a 3D image: 4 or 6 numbers each
            try:
                parse_boxes(d["boxes"], nd)
                break
            except InputError:
                continue
        else:
            parse_boxes(d["boxes"], 2)  # raises, naming the 2D form
    return str(spec).strip()


def canonical(spec: str) -> str:
    """The decomposition a spec means, however spelled and wherever its JSON file lies (for step keys):
    ``A:2x2``, ``B``, or the boxes (and image shape) as compact JSON."""
    kind, d = _parse(spec)
    if kind == "A":
        return "A:" + "x".join(map(str, d))
    if kind == "B":
        return "B"
    nd = 3 if d["boxes"] and len(_flat(d["boxes"][0])) == 6 else 2
    boxes = [list(b.start) + list(b.stop) for b in parse_boxes(d["boxes"], nd)]
    out = {"boxes": boxes, **({"image_shape": list(d["image_shape"])} if "image_shape" in d else {})}
    return json.dumps(out, separators=(",", ":"), sort_keys=True)


def _flat(item: Any) -> list[Any]:
    return list(item["start"]) + list(item["stop"]) if isinstance(item, dict) else list(item)


def make(spec: str, image_shape: Sequence[int], overlap: int = 0) -> Decomposition:
    """Decomposition from a user string: "2x2", "4x4x2", "typeB"/"type-B"/"B", JSON text (a list of
    boxes or {"boxes": [...]}) or a .json file."""
    kind, d = _parse(spec)
    if kind == "B":
        return type_b(image_shape, overlap)
    if kind == "A":
        return type_a(image_shape, d, overlap)
    shape = check_image_shape(image_shape)
    if "image_shape" in d:
        require(
            tuple(d["image_shape"]) == shape,
            "decomposition",
            spec,
            f"its image_shape {tuple(d['image_shape'])} must match the data {shape}",
        )
    require(overlap == 0, "overlap", overlap, "must be 0 with explicit boxes (put the overlap into the boxes)")
    return Decomposition.from_dict(d) if "image_shape" in d else explicit(shape, d["boxes"])


def type_a(image_shape: Sequence[int], parts: Sequence[int], overlap: int = 0) -> Decomposition:
    """Type A: a p x p (x q) grid of tiles, each grown by ``overlap`` towards its neighbours.

    Tiles follow ``numpy.array_split`` (sizes differ by at most one pixel, larger
    first). Each tile then grows by ``overlap`` pixels on every side that faces a
    neighbour (clipped at the image border), so neighbours share 2*overlap pixels:
    CIFAR-10 32x32, 2x2, overlap 4 gives four 20x20 boxes (Gu et al.). For volumes,
    two numbers "p x p" mean p x p x 1 (the depth is not cut), as in KLW Table 10.
    """
    shape = check_image_shape(image_shape)
    space, nd = shape[:-1], len(shape) - 1
    parts = tuple(parts)
    spec = "x".join(map(str, parts))
    require(all(isinstance(p, (int, np.integer)) for p in parts), "decomposition", spec, "parts must be integers")
    require(
        len(parts) != 3 or nd == 3,
        "decomposition",
        spec,
        f"PxPxQ needs 3D data (H, W, D, C); image_shape {shape} is 2D: use PxP",
    )
    if nd == 3 and len(parts) == 2:
        parts += (1,)
    require(len(parts) == nd, "decomposition", spec, f"allowed: {SPECS}")
    spec = "x".join(map(str, parts))
    require(all(p >= 1 for p in parts), "decomposition", spec, "every part count must be >= 1")
    require(
        all(p <= n for p, n in zip(parts, space)),
        "decomposition",
        spec,
        f"more parts than pixels on an axis of the image {space}; each part needs >= 1 pixel",
    )
    require(any(p > 1 for p in parts), "decomposition", spec, "at least one axis must be cut into 2 or more parts")
    grid = itertools.product(*(_split(n, p) for n, p in zip(space, parts)))
    tiles = [Box(*zip(*ranges)) for ranges in grid]
    return Decomposition(shape, tuple(_grow(tiles, space, overlap)), "A", spec, overlap)


def type_b(image_shape: Sequence[int], overlap: int = 0) -> Decomposition:
    """Type B (KLW Fig. 3 right, Table 6 last row): 3x3 tiles + 2x2 overlapping boxes.

    Our reading of the figure: boxes 0-8 are the 3 x 3 type A tiles (row-major);
    boxes 9-12 have the size of the middle tile and are centred on the four
    interior corners of the 3 x 3 grid, so each covers a quarter of four tiles.
    That is 13 equally sized boxes when 3 divides H and W. For volumes the depth
    is not cut (like "PxP" meaning PxPx1): 13 boxes of full depth. ``overlap`` > 0
    grows all boxes as in type A.
    """
    shape = check_image_shape(image_shape)
    space = shape[:-1]
    require(
        all(n >= 3 for n in space[:2]),
        "decomposition",
        "typeB",
        f"type B cuts H and W into 3 parts; image {space} needs H, W >= 3",
    )
    tiles_ax, extras_ax = [], []
    for axis, n in enumerate(space):
        if axis >= 2:  # depth stays whole
            tiles_ax.append([(0, n)])
            extras_ax.append([(0, n)])
        else:
            t = _split(n, 3)
            size = t[1][1] - t[1][0]
            tiles_ax.append(t)
            extras_ax.append([(c - size // 2, c - size // 2 + size) for c in (t[0][1], t[1][1])])
    tiles = [Box(*zip(*r)) for r in itertools.product(*tiles_ax)]
    tiles += [Box(*zip(*r)) for r in itertools.product(*extras_ax)]
    return Decomposition(shape, tuple(_grow(tiles, space, overlap)), "B", "typeB", overlap)


def explicit(image_shape: Sequence[int], boxes: Sequence[Any]) -> Decomposition:
    """Any boxes: ``Box``, ``[start..., stop...]`` or ``{"start": [...], "stop": [...]}``."""
    shape = check_image_shape(image_shape)
    return Decomposition(shape, tuple(parse_boxes(boxes, len(shape) - 1)), "explicit", "explicit", 0)


# -- helpers ---------------------------------------------------------------------------


# -- helpers ---------------------------------------------------------------------------


def _split(n: int, p: int) -> list[tuple[int, int]]:
    """``numpy.array_split`` bounds of range(n) into p parts: the first n % p get one more."""
    q, r = divmod(n, p)
    edges = np.cumsum([0] + [q + 1] * r + [q] * (p - r))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _grow(tiles: list[Box], space: tuple[int, ...], overlap: int) -> list[Box]:
    """Grow every tile by ``overlap`` on each side, clipped to the image.

    A side on the image border cannot grow, so only sides facing a neighbour do.
    Rejects overlaps at which some box would become the whole image.
    """
    check_overlap(overlap)
    # a tile covers the image once overlap >= its distance to the border on every side
    limit = min(max(max(a, n - b) for a, b, n in zip(t.start, t.stop, space)) for t in tiles)
    require(
        overlap < limit,
        "overlap",
        overlap,
        f"must be < {limit}: from {limit} on a box covers the whole image (pointless)",
    )
    return [
        Box(tuple(max(0, a - overlap) for a in t.start), tuple(min(n, b + overlap) for b, n in zip(t.stop, space)))
        for t in tiles
    ]
