"""Subdomain boxes: coverage, tile sizes, overlap geometry, views, type B, JSON, picture, errors."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from ddmlflow.decomposition import Box, Decomposition, explicit, kinds, make, type_a, type_b
from ddmlflow.errors import InputError


def coverage_count(d: Decomposition) -> np.ndarray:
    count = np.zeros(d.image_shape[:-1], dtype=int)
    for b in d.boxes:
        count[b.slices] += 1
    return count


CASES_2D = [((32, 32, 3), p, delta) for p in (2, 3, 4) for delta in (0, 1, 2, 4)] + [
    ((33, 31, 1), 2, 0),
    ((33, 31, 1), 2, 3),
    ((33, 31, 1), 4, 2),
    ((33, 31, 1), 7, 1),
    ((180, 180, 3), 3, 0),
    ((180, 180, 3), 3, 10),
    ((192, 168, 3), 4, 0),
    ((192, 168, 3), 4, 8),
    ((5, 7, 2), 5, 0),
    ((224, 224, 3), 2, 10),
]
CASES_3D = [
    ((128, 128, 64, 1), (4, 4, 2), 0),
    ((128, 128, 64, 1), (4, 4, 1), 4),
    ((17, 19, 11, 2), (2, 3, 2), 0),
    ((17, 19, 11, 2), (3, 3, 4), 2),
    ((16, 16, 8, 1), (2, 2), 1),
    ((9, 9, 9, 1), (1, 1, 3), 1),
]


@pytest.mark.parametrize("shape,parts,delta", [(s, (p, p), d) for s, p, d in CASES_2D] + CASES_3D)
def test_type_a_covers_image_with_even_tiles(shape, parts, delta):
    d = type_a(shape, parts, delta)
    full_parts = tuple(parts) + (1,) * (len(shape) - 1 - len(parts))
    assert d.n == int(np.prod(full_parts)) and d.kind == "A" and d.overlap == delta
    assert d.spec == "x".join(map(str, full_parts))
    assert coverage_count(d).min() >= 1  # union == image
    for b in d.boxes:
        assert all(0 <= a < z <= n for a, z, n in zip(b.start, b.stop, shape))
    tiles = type_a(shape, parts, 0)
    assert coverage_count(tiles).max() == 1  # nonoverlapping tiles partition the image
    for axis, n in enumerate(shape[:-1]):
        sizes = {b.shape[axis] for b in tiles.boxes}
        assert max(sizes) - min(sizes) <= 1
        edges = sorted({(b.start[axis], b.stop[axis]) for b in tiles.boxes})
        assert edges[0][0] == 0 and edges[-1][1] == n and len(edges) == full_parts[axis]
        assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))  # tiles touch, no gaps
    # each box is its tile grown by delta towards every neighbour, clipped at the border
    for t, b in zip(tiles.boxes, d.boxes):
        assert b.start == tuple(max(0, a - delta) for a in t.start)
        assert b.stop == tuple(min(n, z + delta) for z, n in zip(t.stop, shape))


@pytest.mark.parametrize(
    "shape,parts,box_shape",
    [
        ((180, 180, 3), (3, 3), (60, 60)),
        ((192, 168, 3), (4, 4), (48, 42)),
        ((128, 128, 64, 1), (4, 4, 2), (32, 32, 32)),
        ((128, 128, 64, 1), (2, 2), (64, 64, 64)),
    ],
)
def test_even_sizes(shape, parts, box_shape):
    assert {b.shape for b in type_a(shape, parts).boxes} == {box_shape}


def test_uneven_sizes_follow_array_split():
    d = make("2x2", (33, 31, 1))
    assert [b.shape for b in d.boxes] == [(17, 16), (17, 15), (16, 16), (16, 15)]
    for n, p in [(33, 2), (31, 4), (100, 7), (10, 10)]:
        assert [b - a for a, b in kinds._split(n, p)] == [len(c) for c in np.array_split(range(n), p)]


def test_cifar_overlap_geometry():
    d = make("2x2", (32, 32, 3), overlap=4)  # Gu et al.: 20 x 20 sub-images
    assert [b.shape for b in d.boxes] == [(20, 20)] * 4
    assert [d.input_shape(i) for i in range(4)] == [(20, 20, 3)] * 4
    assert make("2x2", (32, 32, 3)).input_shape(0) == (16, 16, 3)
    # horizontal and vertical neighbours share exactly 2 * delta rows/columns
    for delta in (1, 2, 4, 7):
        b = make("3x3", (96, 96, 1), overlap=delta).boxes
        assert b[0].stop[1] - b[1].start[1] == 2 * delta  # left / middle
        assert b[1].stop[1] - b[2].start[1] == 2 * delta  # middle / right
        assert b[0].stop[0] - b[3].start[0] == 2 * delta  # top / middle row
        assert b[4].shape == (32 + 2 * delta,) * 2 and b[0].shape == (32 + delta,) * 2


def test_box_order_is_row_major():
    d = make("2x3", (4, 6, 1))
    assert [b.start for b in d.boxes] == [(0, 0), (0, 2), (0, 4), (2, 0), (2, 2), (2, 4)]


def test_split_returns_views_with_right_shapes():
    x = np.random.default_rng(0).random((5, 33, 31, 3)).astype(np.float32)
    d = make("2x2", x.shape[1:], overlap=3)
    parts = d.split(x)
    assert len(parts) == 4
    for i, (part, b) in enumerate(zip(parts, d.boxes)):
        assert part.shape == (5,) + d.input_shape(i)
        assert np.shares_memory(part, x) and part.base is not None
        np.testing.assert_array_equal(part, x[:, b.start[0] : b.stop[0], b.start[1] : b.stop[1], :])
    assert parts[3][0, 0, 0, 0] == x[0, d.boxes[3].start[0], d.boxes[3].start[1], 0]
    v = np.zeros((2, 128, 128, 64, 1), np.float32)
    d3 = make("4x4x2", v.shape[1:])
    crop = d3.crop(v, 31)
    assert crop.shape == (2, 32, 32, 32, 1) and np.shares_memory(crop, v)
    crop[...] = 1  # writes through: it is the same memory
    assert v[:, 96:, 96:, 32:].all() and v.sum() == 2 * 32**3


def test_crop_rejects_wrong_batch_shape():
    d = make("2x2", (32, 32, 3))
    with pytest.raises(InputError, match=r"^x="):
        d.crop(np.zeros((32, 32, 3)), 0)  # one image, not a batch


def test_type_b_thirteen_equal_boxes_on_grid_corners():
    d = make("typeB", (180, 180, 3))
    assert d.n == 13 and d.kind == "B" and d.spec == "typeB"
    assert {b.shape for b in d.boxes} == {(60, 60)}
    assert d.boxes[:9] == type_a((180, 180, 3), (3, 3)).boxes
    centres = [tuple((a + z) / 2 for a, z in zip(b.start, b.stop)) for b in d.boxes[9:]]
    assert centres == [(60, 60), (60, 120), (120, 60), (120, 120)]  # interior grid corners
    count = coverage_count(d)
    assert count.min() == 1 and count.max() == 2 and count[30:150, 30:150].min() == 2
    for spec in ("B", "typeb", "TYPEB", "type_b", " typeB "):
        assert make(spec, (180, 180, 3)) == d


@pytest.mark.parametrize(
    "shape,delta", [((32, 32, 3), 0), ((33, 31, 1), 2), ((96, 96, 1), 5), ((3, 3, 1), 0), ((60, 60, 30, 1), 3)]
)
def test_type_b_covers_and_grows(shape, delta):
    d = type_b(shape, delta)
    base = type_b(shape)
    assert d.n == 13 and coverage_count(d).min() >= 1
    for t, b in zip(base.boxes, d.boxes):
        assert b.start == tuple(max(0, a - delta) for a in t.start)
        assert b.stop == tuple(min(n, z + delta) for z, n in zip(t.stop, shape))
    if len(shape) == 4:  # volumes: depth is not cut
        assert all(b.start[2] == 0 and b.stop[2] == shape[2] for b in d.boxes)


def test_explicit_boxes_both_formats():
    boxes = [[0, 0, 20, 32], {"start": [12, 0], "stop": [32, 32]}]
    d = explicit((32, 32, 3), boxes)
    assert d.kind == "explicit" and d.boxes == (Box((0, 0), (20, 32)), Box((12, 0), (32, 32)))
    assert make(json.dumps({"boxes": boxes}), (32, 32, 3)) == d
    assert make(json.dumps(boxes), (32, 32, 3)) == d


@pytest.mark.parametrize(
    "d",
    [
        make("2x2", (32, 32, 3), 4),
        make("typeB", (33, 31, 1), 2),
        make("4x4x2", (128, 128, 64, 1)),
        explicit((8, 8, 1), [[0, 0, 8, 5], [0, 3, 8, 8]]),
    ],
)
def test_json_round_trip(d, tmp_path):
    assert Decomposition.from_json(d.to_json()) == d
    assert Decomposition.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    path = tmp_path / "decomposition.json"
    text = d.to_json(path)
    saved = json.loads(path.read_text())
    assert saved == json.loads(text)
    assert set(saved) == {"image_shape", "kind", "spec", "overlap", "boxes"}
    assert Decomposition.from_json(path) == d and Decomposition.from_json(str(path)) == d
    assert make(str(path), d.image_shape) == d  # a logged decomposition.json is a valid spec
    assert all(type(v) is int for b in Decomposition.from_json(path).boxes for v in b.start + b.stop)


def test_draw_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    d = make("typeB", (96, 96, 3))
    d.draw(rng.random((96, 96, 3)), tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as im:
        assert im.format == "PNG" and 300 <= im.width <= 1200 and 300 <= im.height <= 1200
        colours = {c for _, c in im.convert("RGB").getcolors(maxcolors=10**6)}
    assert len(colours) > 50  # image plus coloured outlines, not a blank canvas
    d3 = make("2x2x2", (16, 24, 8, 1), overlap=1)
    d3.draw(rng.random((16, 24, 8, 1)), tmp_path / "v.png")
    with Image.open(tmp_path / "v.png") as im:
        assert im.width > im.height  # aspect follows W > H
    with pytest.raises(InputError, match=r"^image="):
        d.draw(rng.random((32, 32, 3)), tmp_path / "bad.png")


INVALID = [  # (spec, image_shape, overlap, param, words in the message)
    ("0x0", (32, 32, 3), 0, "decomposition", ">= 1"),
    ("2x0", (32, 32, 3), 0, "decomposition", ">= 1"),
    ("1x1", (32, 32, 3), 0, "decomposition", "2 or more"),
    ("2", (32, 32, 3), 0, "decomposition", "PxP"),
    ("2x2x2x2", (32, 32, 8, 1), 0, "decomposition", "PxP"),
    ("2y2", (32, 32, 3), 0, "decomposition", "allowed"),
    ("typeC", (32, 32, 3), 0, "decomposition", "typeB"),
    ("", (32, 32, 3), 0, "decomposition", "allowed"),
    ("-1x2", (32, 32, 3), 0, "decomposition", "allowed"),
    ("2x2", (32, 32, 3), -1, "overlap", ">= 0"),
    ("2x2", (32, 32, 3), 1.5, "overlap", "integer"),
    ("2x2", (32, 32, 3), 16, "overlap", "< 16"),
    ("2x2", (32, 32, 3), 100, "overlap", "whole image"),
    ("typeB", (180, 180, 3), 120, "overlap", "whole image"),
    ("33x2", (32, 32, 3), 0, "decomposition", "more parts than pixels"),
    ("2x2x65", (128, 128, 64, 1), 0, "decomposition", "more parts than pixels"),
    ("typeB", (2, 32, 3), 0, "decomposition", ">= 3"),
    ("2x2x2", (32, 32, 3), 0, "decomposition", "3D data"),
    ("2x2", (32, 32), 0, "image_shape", "(H, W, C)"),
    ('{"boxes": [[0, 0, 33, 32]]}', (32, 32, 3), 0, "decomposition", "inside the image"),
    ('{"boxes": [[-1, 0, 32, 32]]}', (32, 32, 3), 0, "decomposition", "inside the image"),
    ('{"boxes": [[0, 0, 32, 32], [5, 5, 5, 9]]}', (32, 32, 3), 0, "decomposition", "start must be < stop"),
    (
        '{"boxes": [[0, 0, 16, 32], [20, 0, 32, 32]]}',
        (32, 32, 3),
        0,
        "decomposition",
        "128 of 1024 pixels are uncovered",
    ),
    ('{"boxes": [[0, 0, 32]]}', (32, 32, 3), 0, "decomposition", "wrong number of coordinates"),
    ('{"boxes": [[0, 0, 0, 32, 32, 8]]}', (32, 32, 3), 0, "decomposition", "wrong number of coordinates"),
    ('{"boxes": [{"start": [0, 0], "stop": [32]}]}', (32, 32, 3), 0, "decomposition", "wrong number of coordinates"),
    ('{"boxes": [{"begin": [0, 0], "stop": [32, 32]}]}', (32, 32, 3), 0, "decomposition", '"start"'),
    ('{"boxes": [[0, 0, 32.5, 32]]}', (32, 32, 3), 0, "decomposition", "integers"),
    ('{"boxes": []}', (32, 32, 3), 0, "decomposition", "non-empty"),
    ('{"box": []}', (32, 32, 3), 0, "decomposition", '"boxes"'),
    ('{"boxes": [[0, 0, 32, 32]', (32, 32, 3), 0, "decomposition", "invalid JSON"),
    ('{"boxes": [[0, 0, 32, 32]]}', (32, 32, 3), 2, "overlap", "explicit"),
    ("missing/file.json", (32, 32, 3), 0, "decomposition", "path"),
]


@pytest.mark.parametrize("spec,shape,overlap,param,words", INVALID)
def test_invalid_requests_raise_input_error(spec, shape, overlap, param, words):
    with pytest.raises(InputError) as err:
        make(spec, shape, overlap)
    assert err.value.param == param
    message = str(err.value)
    assert message.startswith(f"{param}=") and "\n" not in message
    assert words in message


def test_invalid_direct_constructors():
    with pytest.raises(InputError, match="decomposition"):
        type_a((32, 32, 3), (0, 2))
    with pytest.raises(InputError, match="overlap"):
        type_b((30, 30, 3), overlap=-2)
    with pytest.raises(InputError, match="uncovered"):
        Decomposition((8, 8, 1), (Box((0, 0), (4, 8)),))
    with pytest.raises(InputError, match="coordinates"):
        Decomposition((8, 8, 1), (Box((0, 0, 0), (8, 8, 1)),))
    with pytest.raises(InputError, match="kind"):
        Decomposition((8, 8, 1), (Box((0, 0), (8, 8)),), kind="C")
    wrong_shape = make("2x2", (32, 32, 3)).to_json()
    with pytest.raises(InputError, match="must match the data"):
        make(wrong_shape, (64, 64, 3))


def test_overlap_limit_is_tight():
    make("2x2", (32, 32, 3), overlap=15)  # largest allowed: boxes 31 x 31
    assert {b.shape for b in make("2x2", (32, 32, 3), overlap=15).boxes} == {(31, 31)}
    for spec, shape in [("3x3", (33, 33, 1)), ("2x3", (20, 30, 1)), ("typeB", (90, 90, 1)), ("2x2x1", (16, 16, 4, 1))]:
        limit = next(o for o in itertools.count() if _raises(spec, shape, o))
        d = make(spec, shape, limit - 1)
        assert all(b.shape != shape[:-1] for b in d.boxes)
        grown = [
            Box(tuple(max(0, a - limit) for a in t.start), tuple(min(n, z + limit) for z, n in zip(t.stop, shape)))
            for t in make(spec, shape).boxes
        ]
        assert any(b.shape == shape[:-1] for b in grown)


def _raises(spec, shape, overlap) -> bool:
    try:
        make(spec, shape, overlap)
    except InputError:
        return True
    return False
