"""Paper-style tables and figures from a finished run's results.

- ``results_table``: KLW Table 3 layout (val accuracy, train in brackets), with the
  KLW-TL Table 2 columns (avg. prob., maj. vote) and any further strategies.
- ``training_times_chart``: KLW Fig. 9 (global vs slowest local + coarse).
- ``local_predictions_figure``: KLW Fig. 8 (each box titled with its local net's
  label and confidence, green when right, red when wrong).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _cell(results: dict, key: str) -> str:
    v, t = results.get(f"val_accuracy/{key}"), results.get(f"train_accuracy/{key}")
    if v is None:
        return "-"
    return f"{v:.4f} ({t:.4f})" if t is not None else f"{v:.4f}"


def results_table(results: dict, decomposition: str, strategies: tuple[str, ...] = ()) -> str:
    """Markdown table: validation accuracy, training accuracy in brackets."""
    cols = [("global CNN", "global"), ("local avg", "local_mean"), ("local min", "local_min"),
            ("local max", "local_max"), ("avg. prob.", "avg_prob"), ("maj. vote", "majority_vote"),
            ("CNN-DNN", "cnn_dnn")]
    cols += [(f"CNN-DNN-{s}" if s in ("coherent", "transfer") else s, s) for s in strategies if s != "cnn_dnn"]
    head = "| Decomp. | " + " | ".join(c for c, _ in cols) + " |"
    rule = "|" + "---|" * (len(cols) + 1)
    row = f"| {decomposition} | " + " | ".join(_cell(results, k) for _, k in cols) + " |"
    note = "\nValidation accuracy, training accuracy in brackets (layout of KLW Table 3 / KLW-TL Table 2)."
    return "\n".join([head, rule, row]) + "\n" + note + "\n"


def training_times_chart(times: dict[str, float], path: Path) -> None:
    """Bar chart of training times in seconds (KLW Fig. 9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names, vals = list(times), [times[k] for k in times]
    bars = ax.bar(names, vals, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(vals)])
    ax.bar_label(bars, fmt="%.1f s")
    ax.set_ylabel("training time (s)")
    ax.set_title("Training time: global CNN vs CNN-DNN")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def local_predictions_figure(images: np.ndarray, labels: np.ndarray, decomposition, local_probs: list[np.ndarray],
                             class_names: list[str], path: Path, n_images: int = 4) -> None:
    """A few images cut into their boxes, each titled with its local net's label and confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_images = min(n_images, len(images))
    n = decomposition.n
    fig, axes = plt.subplots(n_images, n, figsize=(1.6 * n, 1.9 * n_images), squeeze=False)
    for r in range(n_images):
        for i in range(n):
            ax = axes[r][i]
            crop = decomposition.crop(images[r : r + 1], i)[0]
            if crop.ndim == 4:  # volume: middle slice along depth
                crop = crop[:, :, crop.shape[2] // 2]
            ax.imshow(np.clip(crop.squeeze(), 0, 1), cmap="gray" if crop.shape[-1] == 1 else None)
            k = int(local_probs[i][r].argmax())
            ok = k == int(labels[r])
            ax.set_title(f"{class_names[k]}\n{local_probs[i][r, k]:.2f}", fontsize=7, color="green" if ok else "red")
            ax.axis("off")
        axes[r][0].text(-0.1, 0.5, class_names[int(labels[r])], transform=axes[r][0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=7)
    fig.suptitle("Local CNN predictions per box (green: right, red: wrong)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
