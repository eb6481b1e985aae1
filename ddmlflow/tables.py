"""Paper-style tables and their pieces (figures: ``ddmlflow.figures``; the ``report`` command that
writes them out: ``ddmlflow.commands.report``).

- ``results_table``: KLW Table 3 layout (val accuracy, train in brackets), with the
  KLW-TL Table 2 columns (avg. prob., maj. vote) and any further strategies.
- ``Doc``, ``md_table`` and the cell helpers (``val_train``, ``diff``, ``relation``, ``held``): the
  experiment report's document, rendered as Markdown and HTML.
"""

from __future__ import annotations

from .aggregate import RULES

# The display name of every method, strategy and result column, in the papers' wording (KLW, KLW-TL, Gu et al.).
# The one map: the results table, the report and the classifier evaluation all take their labels from it.
# ``compose`` is Gu et al.'s composition; its run's accuracy is that of the composed net after further training,
# their GNet-T-trained (``gnet_t``: the composed net before it, ``gnet_r_trained``: the global net from random
# weights; see ``pipeline.strategies.compose_step``).
LABELS = {
    "global": "global CNN",
    "local_mean": "local avg",
    "local_min": "local min",
    "local_max": "local max",
    **{name: rule.label for name, rule in RULES.items()},
    "cnn_dnn": "CNN-DNN",
    "coherent": "CNN-DNN-coherent",
    "transfer": "CNN-DNN-transfer",
    "compose": "GNet-T-trained",
    "speedup": "speedup",
    "gnet_t": "GNet-T",
    "gnet_t_trained": "GNet-T-trained",
    "gnet_r_trained": "GNet-R-trained",
}


def _cell(results: dict, key: str) -> str:
    v, t = results.get(f"val_accuracy/{key}"), results.get(f"train_accuracy/{key}")
    if v is None:
        return "-"
    return f"{v:.4f} ({t:.4f})" if t is not None else f"{v:.4f}"


def results_table(results: dict, decomposition: str, strategies: tuple[str, ...] = ()) -> str:
    """Markdown table: validation accuracy, training accuracy in brackets."""
    keys = ["global", "local_mean", "local_min", "local_max", *RULES, "cnn_dnn"]
    keys += [s for s in strategies if s != "cnn_dnn"]
    cols = [(LABELS.get(k, k), k) for k in keys]
    head = "| Decomp. | " + " | ".join(c for c, _ in cols) + " |"
    rule = "|" + "---|" * (len(cols) + 1)
    row = f"| {decomposition} | " + " | ".join(_cell(results, k) for _, k in cols) + " |"
    note = "\nValidation accuracy, training accuracy in brackets (layout of KLW Table 3 / KLW-TL Table 2)."
    return "\n".join([head, rule, row]) + "\n" + note + "\n"


# -- experiment report: one document rendered as Markdown and HTML ------------------------------------


class Doc:
    """Headings, paragraphs, tables and images, written once, rendered as ``report.md`` and ``report.html``."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, head: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", head, [[_fmt(c) for c in r] for r in rows]))

    def img(self, path: str, caption: str) -> None:
        self.blocks.append(("img", path, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append(
                    "\n".join(
                        ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                        + ["| " + " | ".join(r) + " |" for r in b[2]]
                    )
                )
            else:
                out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        from html import escape as e

        out = [
            (
                f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
                "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
                "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;"
                "padding:3px 8px;text-align:right}th{background:#eef}td:first-child{text-align:left}"
                "img{max-width:100%;border:1px solid #ddd}.held{color:#2a9d3a}.not{color:#c62828}"
                "</style></head><body>"
            )
        ]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(e(b[1]))}</p>")
            elif b[0] == "table":
                cells = lambda r, t: "".join(f"<{t}{_cls(c)}>{_inline(e(c))}</{t}>" for c in r)  # noqa: E731
                out.append(
                    "<table><tr>"
                    + cells(b[1], "th")
                    + "</tr>"
                    + "".join("<tr>" + cells(r, "td") + "</tr>" for r in b[2])
                    + "</table>"
                )
            else:
                out.append(f"<figure><img src='{e(b[1])}' alt='{e(b[2])}'><figcaption>{e(b[2])}</figcaption></figure>")
        return "\n".join(out + ["</body></html>"]) + "\n"


def md_table(text: str) -> tuple[list[str], list[list[str]]]:
    """(head, rows) of the Markdown table in ``text`` (as ``Doc.table`` takes them)."""
    lines = [line.strip().strip("|") for line in text.splitlines() if line.strip().startswith("|")]
    cells = [[c.strip() for c in line.split("|")] for line in lines if not set(line) <= set("-|: ")]
    return (cells[0], cells[1:]) if cells else ([], [])


def _fmt(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        return f"{c:.4f}"
    return str(c)


def _cls(c: str) -> str:
    return " class='held'" if c.startswith("held") else " class='not'" if c.startswith("NOT held") else ""


def _inline(s: str) -> str:
    """**bold** of the Markdown text, in HTML."""
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)


def val_train(v: float | None, t: float | None) -> str:
    """'0.7818 (0.7821)': validation accuracy, training accuracy in brackets (the papers' layout)."""
    if v is None:
        return "-"
    return f"{v:.4f}" + (f" ({t:.4f})" if t is not None else "")


def diff(ours: float | None, paper: float | None) -> str:
    return "-" if ours is None or paper is None else f"{ours - paper:+.4f}"


def relation(a: float | None, b: float | None) -> str | None:
    """'>=' or '<' between two numbers, None if either is missing."""
    if a is None or b is None:
        return None
    return ">=" if a >= b else "<"


def held(ok: bool | None) -> str:
    return "-" if ok is None else "held" if ok else "NOT held"
