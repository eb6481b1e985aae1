"""The published numbers, as data: KLW Tables 2-10 and Figs. 9/12, KLW-TL Tables 1-2, Gu et al. Tables 3.1-3.5.

Each ``Entry`` is one number with its source (paper, table, row label as printed)
and the configuration it belongs to in this package's names (dataset, model,
decomposition, overlap), so a run can be put beside it. Accuracies are fractions
(Gu et al. print percent: 80.49 is stored as 0.8049). ``train`` is the training
accuracy the paper prints in brackets, where it does. Values were typed from
``../shared/papers/*.txt``; ``tests/test_paper_values.py`` finds them there again.

Readings of the text (say so when comparing):
- KLW-TL Table 1 is captioned VGG9 but its CNN-DNN column repeats KLW's VGG3 rows
  (Tables 3, 6) and its Chest CT rows are KLW's 3D CNN: we key it by the caption
  (``vgg9``; ``cnn3d`` for CT), as the presets do.
- Gu et al. Table 3.3 prints the overlapping case (20x20 sub-images, our
  ``overlap=4``) first and the nonoverlapping one (16x16, ``overlap=0``) in
  brackets; there the brackets are not training accuracies.
- Gu et al. use ResNet32/56/110 and CIFAR-100 too; the package has ResNet20 and
  CIFAR-10 only, so ``gc-3.3`` compares a ResNet20 with their ResNet32 column.
- Only numbers the OCR'd Gu et al. text prints legibly are kept (Table 3.1 GFLOPs
  and some Table 3.2 times are garbled there).
"""

from __future__ import annotations

from dataclasses import dataclass

KLW, TL, GC = "KLW", "KLW-TL", "GC"
PAPERS = {
    KLW: "Klawonn, Lanser & Weber, SISC 2024 (CNN-DNN)",
    TL: "Klawonn, Lanser & Weber, transfer learning follow-up (KLW-TL)",
    GC: "Gu, Zhang, Liu & Cai, ETNA 2022 (decomposition and composition)",
}
# Accuracy columns, in the order the report prints them (``val_accuracy/<column>`` in evaluate runs)
ACCURACY_COLUMNS = (
    "global",
    "local_mean",
    "local_min",
    "local_max",
    "avg_prob",
    "majority_vote",
    "cnn_dnn",
    "coherent",
    "transfer",
    "compose",
)


@dataclass(frozen=True)
class Entry:
    paper: str  # KLW | KLW-TL | GC
    table: str  # "3", "Fig. 9", "3.3"
    row: str  # the row as printed, e.g. "type A 2x2, delta=0" or "SNet-1"
    column: str  # "cnn_dnn", "speedup", "global_params", "gnet_t", ...
    value: float
    dataset: str
    model: str
    decomposition: str = ""
    overlap: int = 0
    train: float | None = None

    @property
    def source(self) -> str:
        what = self.table if self.table.startswith("Fig") else f"Table {self.table}"
        return f"{self.paper} {what}, row '{self.row}', column {self.column}"

    @property
    def key(self) -> tuple:
        return (self.dataset, self.model, self.decomposition, self.overlap)


def _row(decomposition: str, overlap: int) -> str:
    kind = "type B, 3x3 + 2x2" if decomposition == "typeB" else f"type A {decomposition}"
    return f"{kind}, delta={overlap}"


def _klw(table: str, dataset: str, model: str, rows: list) -> list[Entry]:
    """KLW Tables 3-10: global, local avg/min/max, CNN-DNN; each 'val (train)'."""
    out = []
    for decomposition, overlap, *cells in rows:
        for col, (v, t) in zip(("global", "local_mean", "local_min", "local_max", "cnn_dnn"), cells):
            out.append(
                Entry(KLW, table, _row(decomposition, overlap), col, v, dataset, model, decomposition, overlap, t)
            )
    return out


_FLOWERS_ROWS = [("2x2", 0), ("3x3", 0), ("4x4", 0), ("typeB", 0)]


def _rows(layout, values):
    return [(*lay, *vals) for lay, vals in zip(layout, values)]


KLW_TABLES = [
    *_klw(
        "3",
        "cifar10",
        "vgg3",
        [
            ("2x2", 0, (0.7818, 0.7821), (0.5091, 0.5381), (0.4867, 0.5164), (0.5352, 0.5605), (0.7669, 0.8071)),
            ("2x2", 2, (0.7818, 0.7821), (0.5620, 0.6063), (0.5353, 0.5786), (0.5862, 0.6390), (0.7808, 0.8343)),
            ("2x2", 4, (0.7818, 0.7821), (0.5983, 0.6053), (0.5785, 0.4760), (0.6149, 0.6629), (0.7973, 0.8448)),
        ],
    ),
    *_klw(
        "4",
        "cifar10",
        "vgg9",
        [
            ("2x2", 0, (0.7585, 0.8487), (0.4862, 0.5122), (0.4277, 0.4838), (0.5173, 0.5553), (0.7999, 0.8663)),
            ("2x2", 2, (0.7585, 0.8487), (0.5545, 0.5899), (0.5121, 0.5747), (0.5677, 0.6007), (0.8008, 0.8676)),
            ("2x2", 4, (0.7585, 0.8487), (0.6121, 0.6434), (0.5704, 0.5464), (0.6336, 0.6788), (0.8226, 0.8887)),
        ],
    ),
    *_klw(
        "5",
        "cifar10",
        "resnet20a",
        [
            ("2x2", 0, (0.8622, 0.9343), (0.5225, 0.5521), (0.4897, 0.5002), (0.5334, 0.5643), (0.8784, 0.9467)),
            ("2x2", 2, (0.8622, 0.9343), (0.5303, 0.5435), (0.4967, 0.5189), (0.5555, 0.5688), (0.8829, 0.9447)),
            ("2x2", 4, (0.8622, 0.9343), (0.5667, 0.5787), (0.5121, 0.5333), (0.5828, 0.5901), (0.8962, 0.9525)),
        ],
    ),
    *_klw(
        "6",
        "tf_flowers",
        "vgg3",
        _rows(
            _FLOWERS_ROWS,
            [
                ((0.6456, 0.9255), (0.5192, 0.5570), (0.4888, 0.5068), (0.5334, 0.5831), (0.6938, 0.7552)),
                ((0.6456, 0.9255), (0.5892, 0.6299), (0.5215, 0.5661), (0.6492, 0.6948), (0.8621, 0.8848)),
                ((0.6456, 0.9255), (0.5598, 0.5882), (0.4955, 0.5199), (0.6262, 0.6725), (0.8471, 0.8593)),
                ((0.6456, 0.9255), (0.5911, 0.5999), (0.5178, 0.5223), (0.6502, 0.6676), (0.8859, 0.9027)),
            ],
        ),
    ),
    *_klw(
        "7",
        "tf_flowers",
        "vgg9",
        _rows(
            _FLOWERS_ROWS,
            [
                ((0.7887, 0.9321), (0.6122, 0.6667), (0.5974, 0.6124), (0.6802, 0.6999), (0.8154, 0.8827)),
                ((0.7887, 0.9321), (0.6445, 0.6973), (0.5878, 0.6224), (0.6889, 0.7112), (0.8738, 0.8971)),
                ((0.7887, 0.9321), (0.6353, 0.6777), (0.5969, 0.6202), (0.6878, 0.7024), (0.8589, 0.8872)),
                ((0.7887, 0.9321), (0.6544, 0.6898), (0.6102, 0.6445), (0.6872, 0.7089), (0.8689, 0.9056)),
            ],
        ),
    ),
    *_klw(
        "8",
        "tf_flowers",
        "resnet20a",
        _rows(
            _FLOWERS_ROWS,
            [
                ((0.8227, 0.9178), (0.6202, 0.6746), (0.5887, 0.6274), (0.6781, 0.6998), (0.8475, 0.9454)),
                ((0.8227, 0.9178), (0.5878, 0.6444), (0.5632, 0.5820), (0.6202, 0.6666), (0.8279, 0.9101)),
                ((0.8227, 0.9178), (0.5676, 0.6032), (0.5303, 0.5555), (0.5887, 0.6479), (0.8068, 0.8892)),
                ((0.8227, 0.9178), (0.5773, 0.6288), (0.5454, 0.5702), (0.6389, 0.6738), (0.8375, 0.9398)),
            ],
        ),
    ),
    *_klw(
        "9",
        "yale_b",
        "vgg3",
        [
            ("3x3", 0, (0.9931, 0.9935), (0.6353, 0.7495), (0.0178, 0.0267), (0.9360, 0.9953), (0.9677, 1.0)),
            ("4x4", 0, (0.9931, 0.9935), (0.5601, 0.6981), (0.0255, 0.0267), (0.9336, 0.9905), (0.9763, 1.0)),
        ],
    ),
    *_klw(
        "10",
        "mosmed",
        "cnn3d",
        [
            ("2x2x1", 0, (0.7667, 0.8214), (0.6875, 0.7780), (0.6667, 0.6929), (0.7000, 0.9214), (0.9143, 0.9357)),
            ("3x3x1", 0, (0.7667, 0.8214), (0.6492, 0.6651), (0.5833, 0.5929), (0.7333, 0.7286), (0.8986, 0.9514)),
            ("4x4x1", 0, (0.7667, 0.8214), (0.6366, 0.6409), (0.5333, 0.5071), (0.7667, 0.8571), (0.8571, 0.9357)),
            ("4x4x1", 4, (0.7667, 0.8214), (0.6479, 0.6409), (0.5585, 0.5322), (0.7847, 0.8667), (0.8633, 0.9456)),
            ("4x4x2", 0, (0.7667, 0.8214), (0.6349, 0.6424), (0.5702, 0.5837), (0.7480, 0.7675), (0.8988, 0.9493)),
        ],
    ),
]


def _table2() -> list[Entry]:
    """KLW Table 2: # params (millions), MFLOPs (model-profiler's unit, 1e8 FLOPs), TtEval (ms)."""
    rows = [  # dataset, decomposition, model, printed name, global (params M, MFLOPs, ms), local (...)
        ("cifar10", "2x2", "vgg3", "VGG3", (0.5506, 0.7779, 207), (0.0892, 0.0497, 82)),
        ("cifar10", "2x2", "vgg9", "VGG9", (4.7868, 1.3404, 312), (1.1959, 0.0851, 98)),
        ("cifar10", "2x2", "resnet20a", "ResNet20", (0.2718, 0.8110, 623), (0.0691, 0.0513, 154)),
        ("tf_flowers", "3x3", "vgg3", "VGG3", (8.2178, 24.6064, 298), (0.2732, 0.6987, 97)),
        ("tf_flowers", "3x3", "vgg9", "VGG9", (6.3593, 41.6092, 443), (1.3266, 1.0736, 153)),
        ("tf_flowers", "3x3", "resnet20a", "ResNet20", (0.2715, 25.6608, 787), (0.0689, 0.7206, 302)),
        ("yale_b", "4x4", "vgg3", "VGG3", (8.5499, 24.1328, 256), (0.1972, 0.3733, 85)),
        ("mosmed", "2x2x1", "cnn3d", "VGG", (1.3529, 11.9684, 403), (0.3396, 0.8069, 127)),
    ]
    out = []
    for dataset, dec, model, name, *nets in rows:
        for net, (params, mflops, ms) in zip(("global", "local"), nets):
            for col, v in (("params_m", params), ("paper_mflops", mflops), ("tteval_ms", ms)):
                out.append(Entry(KLW, "2", f"{name} {net}", f"{net}_{col}", float(v), dataset, model, dec))
    return out


# KLW sec. 5.2 / 5.4 text on Figs. 9 and 12: global training time / (slowest local + coarse)
KLW_FIGURES = [
    Entry(KLW, "Fig. 9", "2x2", "speedup", 3.45, "tf_flowers", "vgg3", "2x2"),
    Entry(KLW, "Fig. 9", "4x4", "speedup", 4.17, "tf_flowers", "vgg3", "4x4"),
    Entry(KLW, "Fig. 12", "2x2x1", "speedup", 10.64, "mosmed", "cnn3d", "2x2x1"),
    Entry(KLW, "Fig. 12", "4x4x1", "speedup", 15.93, "mosmed", "cnn3d", "4x4x1"),
    Entry(KLW, "Fig. 12", "4x4x2", "speedup", 22.87, "mosmed", "cnn3d", "4x4x2"),
]


def _tl(table: str, dataset: str, model: str, dec: str, cells: dict) -> list[Entry]:
    return [Entry(TL, table, _row(dec, 0), col, v, dataset, model, dec, 0, t) for col, (v, t) in cells.items()]


TL_TABLES = [
    # Table 1: avg. prob., maj. vot., CNN-DNN
    *_tl(
        "1",
        "cifar10",
        "vgg9",
        "2x2",
        {"avg_prob": (0.6745, 0.7081), "majority_vote": (0.6237, 0.6546), "cnn_dnn": (0.7669, 0.8071)},
    ),
    *_tl(
        "1",
        "tf_flowers",
        "vgg9",
        "2x2",
        {"avg_prob": (0.6162, 0.6498), "majority_vote": (0.5974, 0.6026), "cnn_dnn": (0.6938, 0.7552)},
    ),
    *_tl(
        "1",
        "tf_flowers",
        "vgg9",
        "4x4",
        {"avg_prob": (0.7565, 0.7745), "majority_vote": (0.7022, 0.7238), "cnn_dnn": (0.8471, 0.8593)},
    ),
    *_tl(
        "1",
        "mosmed",
        "cnn3d",
        "2x2x1",
        {"avg_prob": (0.8038, 0.8279), "majority_vote": (0.7761, 0.7997), "cnn_dnn": (0.9143, 0.9357)},
    ),
    *_tl(
        "1",
        "mosmed",
        "cnn3d",
        "4x4x2",
        {"avg_prob": (0.8024, 0.8409), "majority_vote": (0.7453, 0.7999), "cnn_dnn": (0.8988, 0.9493)},
    ),
    # Table 2: global CNN, CNN-DNN, CNN-DNN-coherent, CNN-DNN-transfer
    *[
        e
        for dataset, model, dec, vals in [
            ("cifar10", "vgg9", "2x2", [(0.7585, 0.8487), (0.7999, 0.8663), (0.7515, 0.7902), (0.8462, 0.8889)]),
            ("cifar10", "resnet20a", "2x2", [(0.8622, 0.9343), (0.8784, 0.9467), (0.8998, 0.9558), (0.9117, 0.9664)]),
            ("tf_flowers", "vgg9", "2x2", [(0.7887, 0.9321), (0.8154, 0.8827), (0.7808, 0.8667), (0.8378, 0.8999)]),
            ("tf_flowers", "vgg9", "4x4", [(0.7887, 0.9321), (0.8589, 0.8872), (0.7676, 0.7995), (0.8608, 0.8806)]),
            (
                "tf_flowers",
                "resnet20a",
                "2x2",
                [(0.8227, 0.9178), (0.8475, 0.9454), (0.8776, 0.9603), (0.8997, 0.9702)],
            ),
            (
                "tf_flowers",
                "resnet20a",
                "4x4",
                [(0.8227, 0.9178), (0.8068, 0.8892), (0.8406, 0.9002), (0.8654, 0.9244)],
            ),
            ("mosmed", "cnn3d", "2x2x1", [(0.7667, 0.8214), (0.9143, 0.9357), (0.8889, 0.9097), (0.9304, 0.9577)]),
            ("mosmed", "cnn3d", "4x4x2", [(0.7667, 0.8214), (0.8988, 0.9493), (0.8774, 0.9305), (0.9025, 0.9488)]),
        ]
        for e in _tl("2", dataset, model, dec, dict(zip(("global", "cnn_dnn", "coherent", "transfer"), vals)))
    ],
]


def _gc33() -> list[Entry]:
    """Gu et al. Table 3.3 (CIFAR-10 columns): overlap 20x20 (our overlap 4) and, in brackets, 16x16."""
    rows = {  # ResNet32, ResNet56, ResNet110: (overlap, nonoverlap)
        "SNet-1": [(80.49, 68.92), (81.02, 69.27), (81.50, 69.08)],
        "SNet-2": [(80.33, 68.18), (80.08, 68.64), (81.53, 68.09)],
        "SNet-3": [(80.63, 68.68), (81.08, 68.79), (80.10, 68.69)],
        "SNet-4": [(78.97, 68.40), (79.52, 68.18), (79.81, 67.92)],
        "GNet-T": [(88.33, 81.11), (88.28, 80.65), (87.87, 80.54)],
        "GNet-T-trained": [(94.40, 94.24), (94.76, 94.08), (94.44, 94.27)],
    }
    out = []
    for row, cells in rows.items():
        col = row.lower().replace("-", "_").replace("snet_", "subnet_")
        for net, (ov, non) in zip(("resnet32", "resnet56", "resnet110"), cells):
            out.append(Entry(GC, "3.3", row, col, ov / 100, "cifar10", net, "2x2", 4))
            out.append(Entry(GC, "3.3", row, col, non / 100, "cifar10", net, "2x2", 0))
    for net, v in zip(("resnet32", "resnet56", "resnet110"), (93.26, 93.12, 92.37)):  # no decomposition
        out.append(Entry(GC, "3.3", "GNet-R-trained", "gnet_r_trained", v / 100, "cifar10", net))
    return out


GC_TABLES = [
    # Table 3.1: parameters (millions) of the global net and one of 4 sub-nets
    *[
        Entry(GC, "3.1", "# param", col, v, "cifar10", net, "2x2")
        for net, g, s in (("resnet32", 7.44, 0.47), ("resnet56", 13.65, 0.86), ("resnet110", 27.62, 1.74))
        for col, v in (("global_params_m", g), ("subnet_params_m", s))
    ],
    # Table 3.2: training-time ratio global / 4 sub-nets, ResNet32, 10 epochs, batch 32..8192; overlap 20x20
    # first, 16x16 in brackets ("w/o" and "w/" data augmentation)
    *[
        Entry(GC, "3.2", f"ratio {aug} augmentation, batch {b}", "speedup", v, "cifar10", "resnet32", "2x2", o)
        for aug, cells in (
            ("w/o", [(32, 2.25, 2.46), (128, 2.56, 2.71), (512, 2.42, 2.75), (2048, 2.19, 2.71), (8192, 2.25, 2.88)]),
            ("w/", [(32, 2.37, 2.52), (512, 2.14, None), (2048, 1.98, 2.00), (8192, 2.01, 2.14)]),
        )
        for b, ov, non in cells
        for o, v in ((4, ov), (0, non))
        if v is not None
    ],  # OCR: "2.14(243)"
    *_gc33(),
    # Table 3.4: Food-101, training time of 10 epochs (s) on 4 GPUs and 1 GPU; GFLOPs
    *[
        Entry(GC, "3.4", f"{what} {net_label}", col, v, "food101", net, parts)
        for net, cells in (
            ("resnet50", [(2227, 427, 420, 521), (2723, 1347, 987, 1277), (7.79, 0.23, 0.028, 0.0056)]),
            ("resnet101", [(2507, 623, 607, 736), (2920, 1650, 1533, 2210), (15.26, 0.42, 0.050, 0.0096)]),
        )
        for what, col, vals in (
            ("training time 4 GPUs", "train_time_4gpu_s", cells[0]),
            ("training time 1 GPU", "train_time_1gpu_s", cells[1]),
            ("GFLOPs", "gflops", cells[2]),
        )
        for net_label, parts, v in zip(("GNet", "SNet-4", "SNet-8", "SNet-16"), ("", "4", "8", "16"), vals)
    ],
    # Table 3.5: Food-101 top-1 / top-5 validation accuracy
    *[
        Entry(GC, "3.5", row, col, v / 100, "food101", net, parts)
        for row, parts, vals in (
            ("GNet-T-4", "4", (49.09, 74.58, 54.69, 79.43)),
            ("GNet-T-8", "8", (25.59, 51.11, 26.80, 54.45)),
            ("GNet-T-16", "16", (13.65, 37.03, 10.76, 31.85)),
            ("GNet-T-4-trained", "4", (75.31, 91.67, 75.39, 91.90)),
            ("GNet-T-8-trained", "8", (75.08, 91.67, 76.56, 92.68)),
            ("GNet-T-16-trained", "16", (74.34, 91.82, 70.55, 91.82)),
            ("GNet-R-trained", "", (75.72, 91.77, 74.40, 90.86)),
        )
        for (net, col), v in zip(
            (("resnet50", "top1"), ("resnet50", "top5"), ("resnet101", "top1"), ("resnet101", "top5")), vals
        )
    ],
]
# Averages the Gu et al. text gives for Table 3.2 (sec. 3.1.1): overlap / nonoverlap
GC_TEXT = [
    Entry(GC, "3.2", f"average ratio {aug} augmentation", "speedup", v, "cifar10", "resnet32", "2x2", o)
    for aug, ov, non in (("w/o", 2.33, 2.70), ("w/", 2.19, 2.34))
    for o, v in ((4, ov), (0, non))
]

ALL: list[Entry] = [*_table2(), *KLW_TABLES, *KLW_FIGURES, *TL_TABLES, *GC_TABLES, *GC_TEXT]


def table(paper: str, name: str) -> list[Entry]:
    """Every entry of one table (``table("KLW", "3")``, ``table("KLW", "Fig. 9")``)."""
    return [e for e in ALL if e.paper == paper and e.table == name]


def lookup(
    dataset: str, model: str, decomposition: str, overlap: int, paper: str | None = None, table_name: str | None = None
) -> list[Entry]:
    """Entries for one configuration (what a ``full`` run with these parameters reproduces)."""
    return [
        e
        for e in ALL
        if e.key == (dataset, model, decomposition, int(overlap))
        and (paper is None or e.paper == paper)
        and (table_name is None or e.table == table_name)
    ]
