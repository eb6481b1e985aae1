"""Every figure of the package, drawn one way: matplotlib's Figure API on an Agg canvas, one palette.

No pyplot: no global state, safe in worker processes and notebooks alike. Each
function draws one paper-style figure and writes a PNG (``path``) and returns the
``Figure`` (a notebook shows it inline):

- ``decomposition_boxes``: one image with every box outlined and numbered (KLW Fig. 3);
- ``local_predictions``: sample images cut into boxes, each titled with its local net's
  label and confidence, green when right, red when wrong (KLW Fig. 8);
- ``training_times``: global CNN vs slowest local + coarse net (KLW Fig. 9), one row;
- ``training_times_rows``: the same for several rows of a table, stacked bars (KLW Figs. 9/12);
- ``learning_curves``: per-epoch curves of several nets (locals, global, coarse; Gu et al. Fig. 3.2);
- ``confusion_matrices``: one row-normalized confusion matrix per method, side by side;
- ``one_vs_rest``: ROC or precision-recall curves, one line per class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import require

# One palette: global CNN teal, slowest local dark blue, coarse light blue (KLW Fig. 9's colours)
GLOBAL, LOCAL, COARSE = "#2a9d8f", "#1d3557", "#8ecae6"
RIGHT, WRONG = "#2a9d3a", "#c62828"
DPI = 110
FONT = 8


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    return fig


def _save(fig, path: str | os.PathLike | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, format="png")
    return fig


def _show(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Image (H, W, C) or volume (H, W, D, C, middle slice shown) scaled to [0, 1] for imshow."""
    img = np.asarray(image, dtype=float)
    if img.ndim == 4:
        img = img[:, :, img.shape[2] // 2]
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return (img, None) if img.shape[-1] == 3 else (img[..., 0], "gray")


def decomposition_boxes(decomposition, image: np.ndarray, path: str | os.PathLike | None = None):
    """One image with every box outlined and numbered in its own colour.

    A volume shows its middle depth slice and the boxes that contain it.
    """
    import matplotlib
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    d = decomposition
    img = np.asarray(image, dtype=float)
    require(img.shape == d.image_shape, "image", img.shape, f"one image of shape {d.image_shape}")
    shown = list(enumerate(d.boxes))
    title = f"{d.kind}: {d.spec}, overlap {d.overlap}, {d.n} boxes"
    if d.spatial_ndim == 3:
        k = img.shape[2] // 2
        shown = [(i, b) for i, b in shown if b.start[2] <= k < b.stop[2]]
        title += f"\ndepth slice {k}: {len(shown)} boxes shown"
    img, cmap = _show(img)
    h, w = img.shape[:2]
    scale = 6.0 / max(h, w)
    fig = _figure(w * scale + 1.0, h * scale + 1.2)
    ax = fig.add_subplot()
    ax.imshow(img, cmap=cmap or "gray", interpolation="nearest", vmin=0, vmax=1)
    tab20, hsv = matplotlib.colormaps["tab20"], matplotlib.colormaps["hsv"]
    halo = [patheffects.Stroke(linewidth=4, foreground="white"), patheffects.Normal()]
    inset = 0.01 * max(h, w)  # so that the shared edges of neighbours both show
    for i, b in shown:  # tab20: the 10 dark colours first, then their pale twins
        colour = tab20((2 * i) % 20 + (2 * i) // 20) if d.n <= 20 else hsv(i / d.n)
        (r0, c0), (r1, c1) = b.start[:2], b.stop[:2]
        ax.add_patch(
            Rectangle(
                (c0 - 0.5 + inset, r0 - 0.5 + inset),
                c1 - c0 - 2 * inset,
                r1 - r0 - 2 * inset,
                fill=False,
                edgecolor=colour,
                lw=2,
                path_effects=halo,
            )
        )
        ax.text(
            (c0 + c1 - 1) / 2,
            (r0 + r1 - 1) / 2,
            str(i),
            color=colour,
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold",
            bbox=dict(facecolor="white", alpha=0.8, edgecolor=colour, pad=1.5),
        )
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def local_predictions(
    images: np.ndarray,
    labels: np.ndarray,
    decomposition,
    local_probs: Sequence[np.ndarray],
    class_names: Sequence[str],
    path: str | os.PathLike | None = None,
    n_images: int = 4,
):
    """A few images cut into their boxes, each titled with its local net's label and confidence."""
    n_images = min(n_images, len(images))
    n = decomposition.n
    fig = _figure(1.6 * n, 1.9 * n_images)
    axes = fig.subplots(n_images, n, squeeze=False)
    for r in range(n_images):
        for i in range(n):
            ax = axes[r][i]
            crop, cmap = _show(decomposition.crop(images[r : r + 1], i)[0])
            ax.imshow(crop, cmap=cmap)
            k = int(np.argmax(local_probs[i][r]))
            p = float(local_probs[i][r][k]) if len(local_probs[i][r]) > 1 else float(local_probs[i][r][0])
            ax.set_title(f"{class_names[k]}\n{p:.2f}", fontsize=7, color=RIGHT if k == int(labels[r]) else WRONG)
            ax.axis("off")
        axes[r][0].text(
            -0.1,
            0.5,
            class_names[int(labels[r])],
            transform=axes[r][0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=7,
        )
    fig.suptitle("Local CNN predictions per box (green: right, red: wrong)", fontsize=9)
    return _save(fig, path)


def training_times(times: dict[str, float], path: str | os.PathLike | None = None, title: str = ""):
    """Bar chart of training times in seconds (KLW Fig. 9), one bar per entry of ``times``."""
    colours = {"global CNN": GLOBAL, "slowest local": LOCAL, "coarse": COARSE}
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    names = list(times)
    bars = ax.bar(names, [times[k] for k in names], color=[colours.get(k, "#6c757d") for k in names])
    ax.bar_label(bars, fmt="%.1f s", fontsize=FONT)
    ax.set_ylabel("training time (s)")
    ax.set_title(title or "Training time: global CNN vs CNN-DNN", fontsize=9)
    return _save(fig, path)


def training_times_rows(rows: dict[str, dict[str, float]], path: str | os.PathLike | None = None, subtitle: str = ""):
    """KLW Figs. 9/12: per row, the global CNN's bar beside slowest local + coarse stacked.

    ``rows[label] = {"global CNN": s, "slowest local": s, "coarse": s}`` (missing keys drawn as 0).
    """
    labels = list(rows)
    x = np.arange(len(labels))
    g = np.array([rows[r].get("global CNN", 0.0) for r in labels])
    lo = np.array([rows[r].get("slowest local", 0.0) for r in labels])
    co = np.array([rows[r].get("coarse", 0.0) for r in labels])
    fig = _figure(max(4.5, 1.6 * len(labels) + 2), 3.8)
    ax = fig.add_subplot()
    ax.bar(x - 0.2, g, 0.38, color=GLOBAL, label="global CNN")
    ax.bar(x + 0.2, lo, 0.38, color=LOCAL, label="slowest local")
    ax.bar(x + 0.2, co, 0.38, bottom=lo, color=COARSE, label="coarse net")
    for i in range(len(labels)):
        if g[i] > 0 and lo[i] + co[i] > 0:
            ax.text(x[i], max(g[i], lo[i] + co[i]) * 1.02, f"x{g[i] / (lo[i] + co[i]):.2f}", ha="center", fontsize=FONT)
    ax.set_xticks(x, labels, fontsize=FONT)
    ax.set_ylabel("training time (s)")
    ax.legend(fontsize=FONT, frameon=False)
    ax.set_title(
        "Training times (speedup = global / (slowest local + coarse))" + (f"\n{subtitle}" if subtitle else ""),
        fontsize=9,
    )
    return _save(fig, path)


def learning_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike | None = None,
    ylabel: str = "validation accuracy",
    title: str = "",
):
    """One line per net; the global and coarse nets in their palette colours, locals in a sequence."""
    import matplotlib

    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    seq = matplotlib.colormaps["viridis"]
    locals_ = [k for k in curves if k not in ("global", "coarse")]
    for name, values in curves.items():
        ys = np.asarray(values, dtype=float)
        if name == "global":
            style = dict(color=GLOBAL, lw=2.2)
        elif name == "coarse":
            style = dict(color=COARSE, lw=2.2, ls="--")
        else:
            style = dict(color=seq(locals_.index(name) / max(1, len(locals_) - 1) * 0.85), lw=1.2)
        ax.plot(np.arange(1, len(ys) + 1), ys, marker="o" if len(ys) < 12 else None, ms=3, label=name, **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel, fontsize=9)
    ax.legend(fontsize=6, frameon=False, ncol=2 if len(curves) > 6 else 1)
    return _save(fig, path)


def confusion_matrices(
    matrices: dict[str, np.ndarray], class_names: Sequence[str], path: str | os.PathLike | None = None
):
    """One confusion matrix (counts, rows: true class) per method, side by side, coloured by row share.

    The diagonal's colour is each class's recall, so classes one method gets right and another
    does not stand out across panels; counts are written in when there are few classes.
    """
    k = len(class_names)
    fig = _figure((0.4 * k + 1.0) * len(matrices) + 0.6, 0.4 * k + 2.4)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (name, m) in zip(axes, matrices.items()):
        m = np.asarray(m, dtype=float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        if k <= 12:
            for i, j in np.ndindex(m.shape):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if share[i, j] > 0.6 else "black",
                )
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(k), class_names if ax is axes[0] else [], fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_title(f"{name}\naccuracy {np.trace(m) / max(m.sum(), 1):.3f}", fontsize=8)
    axes[0].set_ylabel("true class", fontsize=7)
    return _save(fig, path)


def one_vs_rest(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]],
    kind: str,
    path: str | os.PathLike | None = None,
    title: str = "",
):
    """One-vs-rest ROC (``kind="roc"``: x false positive rate, y true positive rate) or precision-recall
    (``kind="pr"``: x recall, y precision) curves; ``curves[class] = (x, y, area)``."""
    import matplotlib

    fig = _figure(5.2, 3.6)
    ax = fig.add_subplot()
    seq = matplotlib.colormaps["tab10" if len(curves) <= 10 else "viridis"]
    for j, (name, (x, y, area)) in enumerate(curves.items()):
        colour = seq(j) if len(curves) <= 10 else seq(j / max(1, len(curves) - 1))
        ax.plot(
            x,
            y,
            drawstyle="steps-post",
            lw=1,
            color=colour,
            label=f"{name} ({'AUC' if kind == 'roc' else 'AP'} {area:.3f})",
        )
    diagonal = ([0, 1], [0, 1]) if kind == "roc" else ([0, 1], [1, 0])
    ax.plot(*diagonal, color="gray", alpha=0.3, ls="--")
    ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
    ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
    ax.set_title(title or ("ROC curves" if kind == "roc" else "Precision-recall curves") + ", one vs rest", fontsize=9)
    ax.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (for ``IPython.display.Image`` in a notebook, no pyplot needed)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
