"""The rows of a ``report``: each finished ``full`` run read back from the store with what its children logged.

``gather`` turns one parent run into a ``Row`` (evaluate metrics, training times, devices, parameter and
FLOPs counts, Gu et al.'s numbers from a ``compose`` run); ``share_global`` lends a global CNN to rows
that did not train one; ``entries_for`` finds the published numbers a row reproduces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from .. import paper_values as pv
from .. import presets
from ..errors import InputError
from ..tags import BUDGET_TAG, DEVICE_TAG, FULL_RUNS_TAG, ROW_NAME_TAG, RUN_PREFIX, STEP_TAG, TABLE_TAG, run_tag
from ..tracking import retry


@dataclass
class Row:
    """One `full` run with what the report needs from its children."""

    run_id: str
    name: str
    params: dict
    tags: dict
    metrics: dict = field(default_factory=dict)  # the evaluate run's
    times: dict = field(default_factory=dict)  # global CNN / slowest local / coarse (s)
    devices: set = field(default_factory=set)
    extra: dict = field(default_factory=dict)  # GC and profile numbers, keyed by paper_values column
    children: dict = field(default_factory=dict)  # step name -> run id
    shared_global: str = ""

    @property
    def budget(self) -> str:
        return self.tags.get(BUDGET_TAG) or budget_of(self.params)

    @property
    def key(self) -> tuple:
        p = self.params
        return (p.get("dataset", ""), p.get("model", ""), p.get("decomposition", ""), int(p.get("overlap", 0) or 0))

    def ours(self, column: str) -> tuple[float | None, float | None]:
        if column in pv.ACCURACY_COLUMNS:
            return self.metrics.get(f"val_accuracy/{column}"), self.metrics.get(f"train_accuracy/{column}")
        if column == "speedup":
            return self.metrics.get("speedup"), None
        return self.extra.get(column), None


def budget_of(params: dict) -> str:
    """A run's budget when no tag says it: ``paper`` only if nothing was cut from the preset."""
    try:
        p = presets.get(params.get("preset", ""))
    except InputError:
        return "custom"
    cut = {k: params.get(k) for k in ("n_train", "n_val", "image_size") if params.get(k)}
    for k in ("epochs", "coarse_epochs"):
        if params.get(k) and int(params[k]) != getattr(p, k):
            cut[k] = params[k]
    if not cut:
        return "paper" if not p.paper.startswith(("default", "3D default")) else "preset"
    return "custom (" + ", ".join(f"{k}={v}" for k, v in cut.items()) + ")"


def full_runs(client: MlflowClient, experiment: str, parent_run: str) -> tuple[list, str]:
    if parent_run:
        parent = retry(client.get_run, parent_run)
        ids = json.loads(parent.data.tags.get(FULL_RUNS_TAG, "[]"))
        return [retry(client.get_run, i) for i in ids], parent.info.experiment_id
    exp = client.get_experiment_by_name(experiment) or (
        client.get_experiment(experiment) if experiment.isdigit() else None
    )
    if exp is None:
        raise InputError("experiment", experiment, "the name or id of an experiment in this tracking store")
    runs = retry(client.search_runs, [exp.experiment_id], "attributes.status = 'FINISHED'", max_results=5000)
    return [r for r in runs if run_tag("evaluate") in r.data.tags], exp.experiment_id


def gather(client: MlflowClient, run, experiment_id: str) -> Row:
    tags = run.data.tags
    children = {k[len(RUN_PREFIX) :]: v for k, v in tags.items() if k.startswith(RUN_PREFIX)}
    p = run.data.params
    name = tags.get(ROW_NAME_TAG) or (
        f"{p.get('dataset')}-{p.get('model')}-{p.get('decomposition')}-d{p.get('overlap')}"
    )
    row = Row(run.info.run_id, name, dict(p), dict(tags), children=children)
    if "evaluate" in children:
        row.metrics = dict(retry(client.get_run, children["evaluate"]).data.metrics)
    locals_ = sorted(k for k in children if k.startswith("train_local/"))
    infos = {k: retry(client.get_run, children[k]) for k in locals_ + ["train_global", "train_coarse"] if k in children}
    t = {k: r.data.metrics.get("train_time_s") for k, r in infos.items()}
    row.devices = {r.data.tags.get(DEVICE_TAG) for r in infos.values()} - {None}
    if t.get("train_global") is not None:
        row.times["global CNN"] = t["train_global"]
    if locals_:
        row.times["slowest local"] = max(t[k] or 0.0 for k in locals_)
    if t.get("train_coarse") is not None:
        row.times["coarse"] = t["train_coarse"]
    for net, k in (("global", "train_global"), ("local", locals_[0] if locals_ else "")):
        if k in infos:
            m = infos[k].data.metrics
            for col, key, scale in (
                ("params_m", "params_count", 1e-6),
                ("paper_mflops", "paper_mflops", 1),
                ("tteval_ms", "eval_time_ms", 1),
            ):
                if key in m:
                    row.extra[f"{net}_{col}"] = m[key] * scale
    _gc(client, row, experiment_id)
    return row


def _gc(client: MlflowClient, row: Row, experiment_id: str) -> None:
    """Gu et al. numbers from the `compose` strategy run of this decomposition, if any."""
    dec = row.children.get("decompose")
    if not dec:
        return
    runs = retry(
        client.search_runs,
        [experiment_id],
        f"tags.`{STEP_TAG}` = 'compose' and params.decompose_run = '{dec}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if not runs:
        return
    r = runs[0]
    row.children["compose"] = r.info.run_id
    m = r.data.metrics
    for i, h in enumerate(
        sorted(retry(client.get_metric_history, r.info.run_id, "subnet_val_accuracy"), key=lambda h: h.step)
    ):
        row.extra[f"subnet_{i + 1}"] = h.value
    for col, key in (
        ("gnet_t", "val_accuracy_composed"),
        ("gnet_t_trained", "final_val_accuracy"),
        ("gnet_r_trained", "val_accuracy_gnet_r"),
    ):
        if key in m:
            row.extra[col] = m[key]


def share_global(rows: list[Row]) -> None:
    """Rows trained without a global CNN take it from a row of the same data, network and budget."""

    def same(r: Row) -> tuple:
        return (
            r.params.get("dataset"),
            r.params.get("model"),
            r.budget,
            r.params.get("seed"),
            r.params.get("epochs"),
            r.params.get("n_train"),
            r.params.get("n_val"),
            r.params.get("image_size"),
        )

    for r in rows:
        if "val_accuracy/global" in r.metrics:
            continue
        src = next((s for s in rows if "val_accuracy/global" in s.metrics and same(s) == same(r)), None)
        if src is None:
            continue
        r.shared_global = src.name
        for k in ("val_accuracy/global", "train_accuracy/global"):
            if k in src.metrics:
                r.metrics[k] = src.metrics[k]
        if "global CNN" in src.times:
            r.times = {"global CNN": src.times["global CNN"], **r.times}
            cnn_dnn = r.times.get("slowest local", 0.0) + r.times.get("coarse", 0.0)
            if cnn_dnn > 0:
                r.metrics["speedup"] = r.times["global CNN"] / cnn_dnn


def entries_for(row: Row) -> list[pv.Entry]:
    """The published numbers this row reproduces: by configuration, plus the table a `reproduce` named."""
    out = pv.lookup(*row.key)
    if row.tags.get(TABLE_TAG) == "gc-3.3":  # their ResNet32 column, for our ResNet20
        out += [
            e
            for e in pv.table(pv.GC, "3.3")
            if e.model == "resnet32" and (e.overlap == row.key[3] or e.column == "gnet_r_trained")
        ]
    return out
