"""Every published value in ddmlflow.paper_values is printed in its paper, next to its own table's caption."""

from __future__ import annotations

import re

import pytest

from conftest import SHARED
from ddmlflow import paper_values as pv

PAPERS = SHARED / "papers"
FILES = {
    pv.KLW: "klawonn-lanser-weber-2024-cnn-dnn-sisc.txt",
    pv.TL: "klawonn-lanser-weber-transfer-learning.txt",
    pv.GC: "gu-zhang-liu-cai-2022-decomposition-composition.txt",
}
pytestmark = pytest.mark.skipif(
    not PAPERS.is_dir(),
    reason=f"needs the papers' text in {PAPERS} (../shared beside the checkout, or set DDMLFLOW_SHARED)",
)


def text(paper: str) -> str:
    return (PAPERS / FILES[paper]).read_text()


def window(e: pv.Entry) -> str:
    """The text around the table's caption label (KLW prints a table's rows just above 'TABLE n')."""
    t = text(e.paper)
    if e.paper == pv.KLW and e.table.startswith("Fig"):  # the speedups are in the text discussing the figure
        start = t.index("Finally, in Figure 9" if e.table == "Fig. 9" else "in [Figure 12]")
        return t[start : start + 4000]
    if e.paper == pv.KLW:
        m = re.search(rf"^TABLE {e.table}$", t, re.M)
        return t[max(0, m.start() - 2200) : m.end()]
    if e.paper == pv.TL:
        start = t.index(f"Table {e.table}: Classification")
        return t[start : t.index("Table 2: Classification") if e.table == "1" else t.index("References")]
    if e.row.startswith("average ratio"):
        start = t.index("Table 3.2 shows the training times")
        return t[start : start + 1200]
    m = re.search(rf"TABLE {re.escape(e.table)}\b", t)
    return t[m.start() : m.start() + 2500]


def printed(e: pv.Entry) -> list[str]:
    """How the paper prints the value: 4 decimals (KLW), percent with 2 decimals (Gu et al.)."""
    v = e.value
    if e.column.endswith("tteval_ms") or e.column.startswith("train_time_"):
        return [str(int(v))]
    if e.column.endswith("params_m"):
        return [f"{v:.4f}M", f"{v:.2f}M"]
    if e.paper == pv.GC and e.column not in ("speedup", "gflops"):
        return [f"{100 * v:.2f}"]
    return [f"{v:.4f}", f"{v:.2f}", f"{v:.3f}", f"{v:g}"]


def found(token: str, hay: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(token)}(?![\d])", hay) is not None


@pytest.mark.parametrize("e", pv.ALL, ids=lambda e: f"{e.paper}-{e.table}-{e.row}-{e.column}-{e.model}-d{e.overlap}")
def test_value_is_printed_near_its_caption(e):
    hay = window(e)
    assert any(found(s, hay) for s in printed(e)), f"{e.source}: {printed(e)[0]} not near the caption"
    if e.train is not None:
        assert found(f"({e.train:.4f})", hay), f"{e.source}: training accuracy ({e.train:.4f}) not found"


@pytest.mark.parametrize("name", ["3", "4", "5", "6", "7", "8", "9", "10"])
def test_klw_rows_are_printed_in_order(name):
    """A KLW row: global, local avg/min/max, CNN-DNN as 'val (train)' on one line, in this order."""
    entries = pv.table(pv.KLW, name)
    assert entries
    lines = window(entries[0]).splitlines()
    for row in dict.fromkeys(e.row for e in entries):
        cells = {e.column: e for e in entries if e.row == row}
        want = [
            f"{cells[c].value:.4f} ({cells[c].train:.4f})"
            for c in ("global", "local_mean", "local_min", "local_max", "cnn_dnn")
        ]
        assert any(re.search(r"\s+".join(map(re.escape, want)), line) for line in lines), f"Table {name} {row}"


def test_tables_cover_every_row_and_column():
    """Sizes as printed: KLW Tables 3-10 are 3,3,3,4,4,4,2,5 rows x 5 columns; KLW-TL 5x3 and 8x4."""
    rows = {"3": 3, "4": 3, "5": 3, "6": 4, "7": 4, "8": 4, "9": 2, "10": 5}
    for name, n in rows.items():
        assert len(pv.table(pv.KLW, name)) == 5 * n
    assert len(pv.table(pv.TL, "1")) == 15 and len(pv.table(pv.TL, "2")) == 32
    assert len(pv.table(pv.KLW, "2")) == 8 * 2 * 3
    assert len({(e.paper, e.table, e.row, e.column, e.key) for e in pv.ALL}) == len(pv.ALL)  # no duplicates


def test_lookup_finds_the_table_rows_of_a_configuration():
    got = {(e.paper, e.table, e.column) for e in pv.lookup("cifar10", "vgg9", "2x2", 0)}
    assert ("KLW", "4", "cnn_dnn") in got and ("KLW-TL", "1", "avg_prob") in got and ("KLW-TL", "2", "transfer") in got
    assert not pv.lookup("cifar10", "vgg9", "2x2", 1)
