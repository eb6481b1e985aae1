"""``reproduce``: run every ``full`` configuration of one paper table, then report it beside the paper.

    reproduce("klw-3", "smoke", data_dir="/data/cifar10")   # in an active (parent) run, or one is started

Each configuration runs as a ``full`` child of the parent run, found by the one reuse rule
(``reuse.Reuse``: its key holds the config, the data's content, the options that change what it
produces and the code): a FINISHED one is reused, an unfinished one resumed in place, and inside it
``full`` reuses its own finished steps, so a rerun after an interruption only runs what is missing. The budget and its exact values are logged (params, tags) and printed, and
the report (``report.md``, ``report.html``, figures) is logged as artifacts of the parent run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow

from .. import config, experiments
from ..config import FullOptions, ReproduceOptions, RunConfig, key_params, parse_options
from ..errors import require
from ..experiments import Budget
from ..reuse import Reuse
from ..tags import BUDGET_TAG, BUDGET_VALUES_TAG, FULL_RUNS_TAG, NOTE_TAG, ROW_NAME_TAG, ROW_TAG, STEP_TAG, TABLE_TAG
from ..tracking import log_params, retry, say, setup, step_run
from .full import StepsFailed, full
from .report import report


def configurations(
    table: str, budget: str | Budget = "smoke", data_dir: str = "", datasets: tuple[str, ...] | None = None
) -> list[tuple]:
    """(Run, RunConfig, Budget) per row (of ``datasets`` only, if given), all checked (data folders too)
    before anything trains."""
    exp = experiments.get(table)
    if datasets:
        unknown = [d for d in datasets if d not in exp.datasets]
        require(not unknown, "datasets", ",".join(datasets), f"data sets of {table}: {', '.join(exp.datasets)}")
    out = []
    for run in exp.runs:
        if datasets and run.dataset not in datasets:
            continue
        b = budget if isinstance(budget, Budget) else experiments.budget(budget, run.dataset, run.net)
        d = experiments.data_dir_for(run.dataset, data_dir)
        out.append((run, config.resolve(run.preset, **run.config_overrides(b, d)), b))
    return out


def estimate(opts: ReproduceOptions) -> float:
    """``reproduce --estimate``: each row's expected time on this machine, printed; nothing trains, no run.
    Returns the table's total in seconds."""
    from ..pipeline.estimate import costs
    from ..pipeline.estimate import estimate as row_estimate

    rows = configurations(opts.table, opts.budget, opts.data_dir, opts.datasets)
    say(f"estimating {opts.table} at budget {opts.budget} on this machine: each row's nets timed briefly")
    total = 0.0
    for run, cfg, b in rows:
        parts = row_estimate(cfg, costs(cfg, run.run_global, run.strategies), run.run_global, run.strategies)
        total += parts["total"]
        shown = ", ".join(f"{k} {_duration(v)}" for k, v in parts.items() if k != "total" and v)
        say(f"{run.name} [{b.describe()}]: {_duration(parts['total'])} ({shown})")
    say(f"{opts.table}, budget {opts.budget}: about {_duration(total)} in all, from scratch (finished runs are reused)")
    return total


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _run_row(rows: Reuse, cfg: RunConfig, opts: FullOptions, name: str, tags: dict) -> str:
    """One configuration as a nested ``full`` child run (the one reuse rule: its key holds the config,
    the data's content and the options that change what it produces); the only place that calls ``full``."""
    run_id, done = rows.get("full", name, {}, cfg, tags, extra=key_params(opts))
    if done:
        return run_id
    try:
        with step_run(run_id):
            mlflow.set_tags(tags)
            full(cfg, opts)
    finally:
        rows.release(run_id)
    import keras

    keras.backend.clear_session()  # the next row starts afresh (off the row's clock: ~0.5 s of gc)
    return run_id


def run_reproduce(opts: ReproduceOptions) -> dict:
    """``reproduce`` as a command (``config.ReproduceOptions``), in the run the CLI opened."""
    return reproduce(opts.table, opts.budget, opts.data_dir, opts)


def reproduce(
    table: str,
    budget: str | Budget = "smoke",
    data_dir: str = "",
    opts: ReproduceOptions | None = None,
    *,
    registered_model_name: str = "-",
    out_dir: str | Path | None = None,
    **given,
) -> dict:
    """Run (or reuse) every row of ``table`` under the active run, then log the report there.

    ``opts``: how the rows run (executor, GPUs, force; ``given``: the same by name, parsed like the command
    line's, when ``opts`` is not given). Returns {"runs": {row name: full run id}, "failed": {row name:
    reason}, "report": folder}. Raises ``StepsFailed`` at the end if a row failed (the others still ran
    and are reported).
    """
    opts = opts or parse_options(ReproduceOptions, **given)
    rows = configurations(table, budget, data_dir, opts.datasets)
    if mlflow.active_run() is not None:
        return _reproduce(table, budget, rows, data_dir, opts, registered_model_name, out_dir)
    setup()
    with retry(mlflow.start_run, run_name=f"reproduce-{table}-{_budget_name(budget)}"):  # FAILED on an exception
        return _reproduce(table, budget, rows, data_dir, opts, registered_model_name, out_dir)


def full_options(opts: ReproduceOptions, run: experiments.Run, registered_model_name: str) -> FullOptions:
    """A row's ``full`` options: the row's own (global net, strategies), the rest as ``reproduce`` got them."""
    shared = {
        f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name in FullOptions.__dataclass_fields__
    }
    return dataclasses.replace(
        parse_options(FullOptions),
        **shared,
        run_global=run.run_global,
        strategies=tuple(run.strategies),
        registered_model_name=registered_model_name,
    )


def _reproduce(table, budget, rows, data_dir, opts: ReproduceOptions, registered_model_name, out_dir) -> dict:
    exp = experiments.get(table)
    parent = mlflow.active_run()
    values = {f"budget.{r.dataset}/{r.net}": b.describe() for r, _, b in rows}
    log_params({"table": table, "budget": _budget_name(budget), "data_dir": data_dir, **values})
    mlflow.set_tags(
        {
            STEP_TAG: "reproduce",
            TABLE_TAG: table,
            BUDGET_TAG: _budget_name(budget),
            NOTE_TAG: f"{exp.label}: {exp.title}. " + "; ".join(dict.fromkeys(values.values())) + ". " + exp.note,
        }
    )
    say(f"reproduce {table} ({exp.title}): {len(rows)} configurations")
    for line in dict.fromkeys(values.values()):
        say(line)
    ids, failed = {}, {}
    reuse = Reuse(rows[0][1], parent.info.run_id, parent.info.experiment_id, opts.force)
    for run, cfg, b in rows:
        tags = {
            TABLE_TAG: table,
            ROW_TAG: run.row,
            ROW_NAME_TAG: run.name,
            BUDGET_TAG: b.name,
            BUDGET_VALUES_TAG: b.describe(),
        }
        say(f"{run.name} [{b.describe()}]")
        try:
            ids[run.name] = _run_row(reuse, cfg, full_options(opts, run, registered_model_name), run.name, tags)
        except StepsFailed as e:
            failed[run.name] = str(e)
            say(f"{run.name} failed: {e}")
        mlflow.set_tag(FULL_RUNS_TAG, json.dumps(list(ids.values())))
    # a folder the user finds after the command, in the folder it ran in (``mlflow run``: the project's)
    out = Path(out_dir) if out_dir else Path("reports", f"{table}-{_budget_name(budget)}").resolve()
    report(
        parent_run=parent.info.run_id,
        out_dir=out,
        title=f"{exp.label} ({table}): {exp.title}, budget {_budget_name(budget)}",
    )
    retry(mlflow.log_artifacts, str(out))
    if failed:
        raise StepsFailed(
            f"{len(failed)} of {len(rows)} configurations failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    return {"runs": ids, "failed": failed, "report": out, "parent": parent.info.run_id}


def _budget_name(budget: str | Budget) -> str:
    return budget.name if isinstance(budget, Budget) else budget
