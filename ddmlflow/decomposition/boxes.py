"""Boxes and the ``Decomposition`` that holds them: validation, cropping, JSON.

A box is a half-open index range on every spatial axis (channels are never cut). Boxes together cover
every pixel and may overlap; local networks see ``x[:, box]``, a numpy view, so the data set is
stored once and sliced on the fly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddmlflow.errors import InputError, require

from ..figures import decomposition_boxes

KINDS = ("A", "B", "explicit")


@dataclass(frozen=True)
class Box:
    """Pixels ``start[a] <= i < stop[a]`` on every spatial axis ``a``."""

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:  # accept lists / numpy ints, store plain int tuples
        object.__setattr__(self, "start", tuple(int(v) for v in self.start))
        object.__setattr__(self, "stop", tuple(int(v) for v in self.stop))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))


@dataclass(frozen=True)
class Decomposition:
    """Boxes over the spatial axes of ``image_shape`` (spatial + channels).

    Construction validates: every box lies in the image, is non-empty and the
    boxes cover every pixel. Box order is row-major over the tile grid (last
    spatial axis fastest); this order is the subdomain index used everywhere.
    """

    image_shape: tuple[int, ...]
    boxes: tuple[Box, ...]
    kind: str = "explicit"
    spec: str = "explicit"
    overlap: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", check_image_shape(self.image_shape))
        object.__setattr__(self, "boxes", tuple(self.boxes))
        require(self.kind in KINDS, "decomposition", self.kind, f"kind must be one of {KINDS}")
        check_overlap(self.overlap)
        _check_boxes(self.image_shape[:-1], self.boxes)

    @property
    def n(self) -> int:
        return len(self.boxes)

    @property
    def spatial_ndim(self) -> int:
        return len(self.image_shape) - 1

    def input_shape(self, i: int) -> tuple[int, ...]:
        """Input shape of local network ``i``: box shape plus all channels."""
        return self.boxes[i].shape + (self.image_shape[-1],)

    def crop(self, x: np.ndarray, i: int) -> np.ndarray:
        """Sub-images of box ``i`` for a batch ``x`` of shape (n, *image_shape); a view."""
        shape = tuple(x.shape[1:])
        require(
            shape == self.image_shape,
            "x",
            tuple(x.shape),
            f"a batch of shape (n, {', '.join(map(str, self.image_shape))})",
        )
        return x[(slice(None),) + self.boxes[i].slices]

    def split(self, x: np.ndarray) -> list[np.ndarray]:
        """All sub-image batches, one view per box (no copies)."""
        return [self.crop(x, i) for i in range(self.n)]

    # -- serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_shape": list(self.image_shape),
            "kind": self.kind,
            "spec": self.spec,
            "overlap": self.overlap,
            "boxes": [{"start": list(b.start), "stop": list(b.stop)} for b in self.boxes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decomposition:
        require(
            isinstance(d, dict) and "boxes" in d and "image_shape" in d,
            "decomposition",
            d,
            'a dict with "image_shape" and "boxes" (and optionally kind, spec, overlap)',
        )
        shape = check_image_shape(d["image_shape"])
        return cls(
            shape,
            tuple(parse_boxes(d["boxes"], len(shape) - 1)),
            d.get("kind", "explicit"),
            str(d.get("spec", "explicit")),
            d.get("overlap", 0),
        )

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike[str]) -> Decomposition:
        return cls.from_dict(load_json(text_or_path))

    # -- picture -----------------------------------------------------------------------

    def draw(self, image: np.ndarray, path: str | os.PathLike[str]) -> None:
        """PNG of one image with every box outlined and numbered (``figures.decomposition_boxes``)."""
        decomposition_boxes(self, image, path)


# -- validation ------------------------------------------------------------------------


def check_overlap(overlap: Any) -> None:
    ok = isinstance(overlap, (int, np.integer)) and not isinstance(overlap, bool) and overlap >= 0
    require(bool(ok), "overlap", overlap, "an integer >= 0 (pixels added on each side facing a neighbour)")


def check_image_shape(image_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in image_shape)
    except (TypeError, ValueError):
        shape = ()
    require(
        len(shape) in (3, 4) and all(v >= 1 for v in shape),
        "image_shape",
        image_shape,
        "(H, W, C) for images or (H, W, D, C) for volumes, all >= 1",
    )
    return shape


def _check_boxes(space: tuple[int, ...], boxes: tuple[Box, ...]) -> None:
    nd = len(space)
    require(len(boxes) > 0, "decomposition", [], "at least one box")
    for i, b in enumerate(boxes):
        value = [list(b.start), list(b.stop)]
        require(
            len(b.start) == nd and len(b.stop) == nd,
            "decomposition",
            value,
            f"box {i}: a {nd}D image needs {nd} start and {nd} stop coordinates",
        )
        require(
            all(a < z for a, z in zip(b.start, b.stop)),
            "decomposition",
            value,
            f"box {i}: start must be < stop on every axis",
        )
        require(
            all(0 <= a and z <= n for a, z, n in zip(b.start, b.stop, space)),
            "decomposition",
            value,
            f"box {i} must lie inside the image {space}",
        )
    covered = np.zeros(space, dtype=bool)
    for b in boxes:
        covered[b.slices] = True
    missing = covered.size - int(covered.sum())
    require(
        missing == 0,
        "decomposition",
        f"{len(boxes)} boxes",
        f"boxes must cover every pixel; {missing} of {covered.size} pixels are uncovered",
    )


def parse_boxes(items: Any, nd: int) -> list[Box]:
    fmt = f'{nd}D boxes as [start x{nd}, stop x{nd}] or {{"start": [..{nd}], "stop": [..{nd}]}}'
    require(isinstance(items, (list, tuple)) and len(items) > 0, "decomposition", items, f"a non-empty list of {fmt}")
    boxes = []
    for i, item in enumerate(items):
        if isinstance(item, Box):
            boxes.append(item)
            continue
        if isinstance(item, dict):
            ok = set(item) == {"start", "stop"} and all(
                isinstance(item[k], (list, tuple)) and len(item[k]) == nd for k in item
            )
            coords = list(item["start"]) + list(item["stop"]) if ok else []
        else:
            coords = list(item) if isinstance(item, (list, tuple)) else []
            ok = len(coords) == 2 * nd
        require(ok, "decomposition", item, f"box {i}: wrong number of coordinates; {fmt}")
        require(
            all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in coords),
            "decomposition",
            item,
            f"box {i}: coordinates must be integers",
        )
        boxes.append(Box(tuple(coords[:nd]), tuple(coords[nd:])))
    return boxes


def load_json(text_or_path: str | os.PathLike[str]) -> Any:
    s = str(text_or_path).strip()
    if not s.startswith(("{", "[")):
        require(os.path.isfile(s), "decomposition", s, "JSON text or the path of a .json file")
        with open(s) as f:
            s = f.read()
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise InputError("decomposition", str(text_or_path)[:80], f"invalid JSON ({e})") from None
