"""``report``: the paper's tables and figures rebuilt from the runs in a tracking store, beside the published values.

Reads only the store (MlflowClient): ``full`` parent runs (tag ``ddmlflow.run.evaluate``), their
``evaluate``, training and strategy children, metric histories and a few artifacts (``boxes.png``,
``local_predictions.png``, ``confusion_matrices.png``, ``per_class.md``). Nothing is retrained, so it
works on any existing experiment:

    report(experiment="Default", out_dir="report")          # every finished `full` run
    report(parent_run="<reproduce run id>", out_dir="...")   # the rows of one `reproduce`

Writes ``report.md``, ``report.html`` and their PNGs. Each row says its budget (``smoke``, ``cpu``,
``paper`` or the exact overrides), so a quick number is never read as a paper one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from .. import figures
from .. import paper_values as pv
from ..errors import InputError
from ..tables import LABELS, Doc, diff, held, md_table, relation, val_train
from ..tags import BUDGET_VALUES_TAG, EXECUTOR_TAG
from ..tracking import retry, say
from .report_rows import Row, entries_for, full_runs, gather, share_global

# Relations the papers state, checked per row where the paper prints both numbers
PAIRS = [
    ("cnn_dnn", "global"),
    ("cnn_dnn", "avg_prob"),
    ("avg_prob", "majority_vote"),
    ("coherent", "cnn_dnn"),
    ("transfer", "cnn_dnn"),
    ("gnet_t_trained", "gnet_r_trained"),
    ("gnet_t", "subnet_1"),
]


def run_report(opts) -> Path:
    """``report`` as a command (``config.ReportOptions``): written, printed and logged into the run the CLI opened."""
    out = report(opts.experiment, opts.reproduce_run, opts.out_dir)
    if mlflow.active_run() is not None:
        retry(mlflow.log_artifacts, str(out))
    print((out / "report.md").read_text())
    return out


def report(experiment: str = "", parent_run: str = "", out_dir: str | Path = "report", title: str = "") -> Path:
    """Write report.md / report.html (and PNGs) into ``out_dir`` from the store; returns ``out_dir``.

    ``parent_run``: a ``reproduce`` run (its rows); else every finished ``full`` run of ``experiment``.
    """
    client = MlflowClient()
    if not parent_run and not experiment:
        raise InputError("experiment", experiment, "an experiment name or id (or parent_run=<reproduce run id>)")
    runs, exp_id = full_runs(client, experiment, parent_run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [gather(client, r, exp_id) for r in sorted(runs, key=lambda r: r.info.start_time)]
    share_global(rows)
    doc = Doc()
    title = title or f"ddmlflow report: {experiment or parent_run}"
    doc.h(1, title)
    budgets = sorted({r.budget for r in rows})
    doc.p(
        f"Tracking store {mlflow.get_tracking_uri()}, experiment {exp_id}, {len(rows)} `full` runs. "
        f"**Budget: {', '.join(budgets) or '-'}.** "
        + (
            "Accuracies from a budget other than `paper` are not "
            "comparable with the published values; compare orderings."
            if set(budgets) - {"paper"}
            else ""
        )
    )
    for r in rows:
        if r.tags.get(BUDGET_VALUES_TAG):
            doc.p(f"{r.name}: {r.tags[BUDGET_VALUES_TAG]}")
    _tables(doc, rows)
    _claims(doc, rows)
    _figures(doc, client, rows, out)
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html(title))
    say(f"report: {out / 'report.md'} ({len(rows)} runs; budget {', '.join(budgets)})")
    return out


def _tables(doc: Doc, rows: list[Row]) -> None:
    sections: dict[tuple, list] = {}
    for r in rows:
        for e in entries_for(r):
            sections.setdefault((e.paper, e.table), []).append((r, e))
    order = lambda k: (list(pv.PAPERS).index(k[0]), k[1].startswith("Fig"), float(k[1].split()[-1]))  # noqa: E731
    for paper, table in sorted(sections, key=order):
        label = table if table.startswith("Fig") else f"Table {table}"
        doc.h(2, f"{paper} {label}")
        lines = []
        for r, e in sections[(paper, table)]:
            v, t = r.ours(e.column)
            shared = " (from " + r.shared_global + ")" if e.column == "global" and r.shared_global else ""
            lines.append(
                [
                    r.name,
                    r.budget,
                    e.row,
                    LABELS.get(e.column, e.column),
                    val_train(v, t if e.train is not None else None) + shared,
                    val_train(e.value, e.train),
                    diff(v, e.value),
                ]
            )
        doc.table(["run", "budget", "paper row", "quantity", "ours", "paper", "ours - paper"], lines)
    plain = [r for r in rows if not entries_for(r)]
    if plain:
        doc.h(2, "Runs without published values")
        cols = [c for c in pv.ACCURACY_COLUMNS if any(f"val_accuracy/{c}" in r.metrics for r in plain)]
        doc.table(
            ["run", "budget", *[LABELS[c] for c in cols], "speedup"],
            [[r.name, r.budget, *[val_train(*r.ours(c)) for c in cols], r.metrics.get("speedup")] for r in plain],
        )
    doc.p("Validation accuracy, training accuracy in brackets (the papers' layout).")


def _claims(doc: Doc, rows: list[Row]) -> None:
    """The orderings the papers state, checked on our numbers: held / NOT held."""
    lines = []
    for r in rows:
        paper = {e.column: e.value for e in entries_for(r)}
        for a, b in PAIRS:
            rel = relation(paper.get(a), paper.get(b))
            ours = relation(r.ours(a)[0], r.ours(b)[0])
            if rel and ours:
                lines.append(
                    [
                        f"{LABELS.get(a, a)} {rel} {LABELS.get(b, b)} (paper's numbers)",
                        r.name,
                        r.budget,
                        f"{paper[a]:.4f} vs {paper[b]:.4f}",
                        f"{r.ours(a)[0]:.4f} vs {r.ours(b)[0]:.4f}",
                        held(ours == rel),
                    ]
                )
        cnn, avg, vote = (r.ours(k)[0] for k in ("cnn_dnn", "avg_prob", "majority_vote"))
        if None not in (cnn, avg, vote):
            claim = " >= ".join(LABELS[k] for k in ("cnn_dnn", "avg_prob", "majority_vote"))
            lines.append(
                [
                    f"{claim} (KLW-TL sec. 3.2)",
                    r.name,
                    r.budget,
                    "stated",
                    f"{cnn:.4f} / {avg:.4f} / {vote:.4f}",
                    held(cnn >= avg >= vote),
                ]
            )
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault(
            (r.params.get("dataset"), r.params.get("model"), r.params.get("decomposition"), r.budget), []
        ).append(r)
    for (ds, model, dec, budget), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.key[3])
        if len({r.key[3] for r in rs}) < 2:
            continue
        for col in ("local_mean", "cnn_dnn"):
            vals = [r.ours(col)[0] for r in rs]
            if None in vals:
                continue
            ok = all(x < y for x, y in zip(vals, vals[1:]))  # flat is not "helps"
            lines.append(
                [
                    f"more overlap helps: {LABELS[col]} grows with overlap (KLW sec. 5.1)",
                    f"{ds}-{model}-{dec}",
                    budget,
                    "stated",
                    ", ".join(f"d{r.key[3]}: {v:.4f}" for r, v in zip(rs, vals)),
                    held(ok),
                ]
            )
    doc.h(2, "Orderings the papers claim")
    if lines:
        doc.table(["claim", "run", "budget", "paper", "ours", ""], lines)
    else:
        doc.p("No row has the numbers a claim needs.")


def _figures(doc: Doc, client: MlflowClient, rows: list[Row], out: Path) -> None:
    doc.h(2, "Figures")
    timed = {r.name: r.times for r in rows if r.times}
    if timed:
        devices = sorted(set().union(*(r.devices for r in rows)))
        executors = sorted({r.tags.get(EXECUTOR_TAG) or r.params.get("executor") or "process" for r in rows})
        sub = (
            f"devices: {', '.join(devices) or 'unknown'}; executor: {', '.join(executors)}; "
            f"budget: {', '.join(sorted({r.budget for r in rows}))}"
        )
        figures.training_times_rows(timed, out / "training_times.png", sub)
        doc.img(
            "training_times.png", f"Training times, global CNN vs slowest local + coarse (KLW Figs. 9/12 style); {sub}"
        )
    for r in rows:
        curves = {}
        for step in sorted(r.children):
            if step.startswith(("train_local/", "train_global", "train_coarse")):
                h = sorted(retry(client.get_metric_history, r.children[step], "val_accuracy"), key=lambda m: m.step)
                label = {"train_global": "global", "train_coarse": "coarse"}.get(step, "local " + step.split("/")[-1])
                if h:
                    curves[label] = [m.value for m in h]
        safe = r.name.replace("/", "_")
        if curves:
            figures.learning_curves(
                curves, out / f"{safe}_curves.png", title=f"{r.name} ({r.budget}): validation accuracy per epoch"
            )
            doc.img(f"{safe}_curves.png", f"{r.name}: learning curves of the locals, global and coarse nets")
        for step, art, what in (
            ("decompose", "boxes.png", "decomposition boxes"),
            ("evaluate", "local_predictions.png", "local predictions (KLW Fig. 8 style)"),
            (
                "evaluate",
                "confusion_matrices.png",
                "validation confusion matrices, "
                + " vs ".join(LABELS[k] for k in ("cnn_dnn", "avg_prob", "majority_vote", "global")),
            ),
        ):
            if step in r.children and _download(r.children[step], art, out / f"{safe}_{art}"):
                doc.img(f"{safe}_{art}", f"{r.name}: {what}")
        if "evaluate" in r.children and _download(r.children["evaluate"], "per_class.md", out / f"{safe}_per_class.md"):
            head, lines = md_table((out / f"{safe}_per_class.md").read_text())
            doc.p(
                f"{r.name}: validation recall per class; the last column shows the classes the coarse net "
                "fixes (or breaks) compared with averaging the local probabilities."
            )
            doc.table(head, lines)


def _download(run_id: str, artifact: str, dst: Path) -> bool:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp), dst)
        return True
    except Exception:  # noqa: BLE001 - an older run without that artifact
        return False
