"""The ``ddmlflow`` command: one subcommand per step, the MLproject's parameter names.

Bad input: one line on stderr naming the parameter, exit code 2, no traceback
(``--debug`` shows it), and the MLflow run (if one was opened) marked FAILED.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .errors import InputError

CONFIG_OPTIONS = ("dataset", "data_dir", "model", "decomposition", "overlap", "width_divisor", "epochs",
                  "batch_size", "learning_rate", "optimizer", "patience", "coarse_hidden", "coarse_dropout",
                  "coarse_epochs", "coarse_batch_size", "coarse_learning_rate", "coarse_patience", "seed", "image_size",
                  "n_train", "n_val")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own convention)
        raise InputError("arguments", " ".join(sys.argv[1:])[:200], message)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="", help="named paper configuration (see `ddmlflow presets`)")
    for name in CONFIG_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default="", help="overrides the preset")
    p.add_argument("--run-id", default="", help="log into this existing run (used by `full` and `mlflow run`)")
    p.add_argument("--parent-run", default="", help="nest the new run under this parent run")


def _ids(param: str, value: str) -> list[str]:
    ids = [s.strip() for s in value.split(",") if s.strip()]
    if not ids:
        raise InputError(param, value, "comma-separated MLflow run ids")
    return ids


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ddmlflow", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("decompose", help="load the data, cut it into boxes, log both")
    _config_args(s)
    for cmd in ("train-global", "train-local"):
        s = sub.add_parser(cmd, help=f"train the {cmd.split('-')[1]} CNN")
        _config_args(s)
        s.add_argument("--decompose-run", required=True)
        if cmd == "train-local":
            s.add_argument("--box", required=True, type=int)
    s = sub.add_parser("train-coarse", help="train the coarse net on the local probabilities")
    _config_args(s)
    s.add_argument("--local-runs", required=True)
    s = sub.add_parser("evaluate", help="compare, report, register the CNN-DNN")
    _config_args(s)
    for a in ("--decompose-run", "--local-runs", "--coarse-run"):
        s.add_argument(a, required=True)
    s.add_argument("--global-run", default="")
    s.add_argument("--registered-model-name", default="")
    for cmd, what in (("train-coherent", "the CNN-DNN as one model from random weights (KLW-TL)"),
                      ("transfer", "the CNN-DNN as one model from the trained locals, trained further (KLW-TL)"),
                      ("compose", "Gu-Cai: sub-networks on the boxes composed into the global net, trained further")):
        s = sub.add_parser(cmd, help=what)
        _config_args(s)
        s.add_argument("--decompose-run", required=True)
        if cmd == "transfer":
            s.add_argument("--local-runs", required=True)
            s.add_argument("--coarse-run", default="")
    s = sub.add_parser("full", help="every step under one parent run")
    _config_args(s)
    s.add_argument("--global", dest="run_global", default="true")
    s.add_argument("--gpus", default="auto")
    s.add_argument("--jobs-per-gpu", default="1")
    s.add_argument("--max-parallel", default="1")
    s.add_argument("--force", default="false")
    s.add_argument("--registered-model-name", default="")
    s.add_argument("--strategies", default="cnn_dnn")
    s = sub.add_parser("predict", help="class and probability for image, .npy or NIfTI files")
    s.add_argument("--model", required=True, help="e.g. models:/ddmlflow-shapes2d@champion")
    s.add_argument("files", nargs="+")
    s = sub.add_parser("profile", help="KLW Table 2 row of a preset: params, FLOPs, TtEval")
    s.add_argument("--preset", required=True)
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("presets", help="list the presets, or show one")
    s.add_argument("name", nargs="?")
    return p


def _config(a: argparse.Namespace):
    from .config import resolve

    return resolve(a.preset, **{k: getattr(a, k) for k in CONFIG_OPTIONS})


def _open_run(a: argparse.Namespace, name: str, step: str) -> str:
    """The run to log into: given, from ``mlflow run``, or a new one."""
    from .tracking import create_child, setup

    given = a.run_id or os.environ.pop("MLFLOW_RUN_ID", "")
    if given:
        return given
    return create_child(setup(), a.parent_run or None, name, step, key="")


def _run_step(a: argparse.Namespace) -> int:
    from .pipeline import coarse, decompose, evaluate, train
    from .tracking import say, step_run, ui_link

    cfg = _config(a)
    cmd = a.command
    if cmd == "decompose":
        run_id, fn = _open_run(a, "decompose", "decompose"), lambda: decompose.decompose(cfg)
    elif cmd in ("train-global", "train-local"):
        box = None if cmd == "train-global" else a.box
        name = "train_global" if box is None else f"train_local/{box:02d}"
        run_id = _open_run(a, name, name.split("/")[0])
        fn = lambda: train.train_network(cfg, a.decompose_run, box)  # noqa: E731
    elif cmd == "train-coarse":
        run_id = _open_run(a, "train_coarse", "train_coarse")
        fn = lambda: coarse.train_coarse(cfg, _ids("local_runs", a.local_runs))  # noqa: E731
    elif cmd in ("train-coherent", "transfer", "compose"):
        from .pipeline import strategies

        name = {"train-coherent": "coherent"}.get(cmd, cmd)
        run_id = _open_run(a, name, name)
        local = _ids("local_runs", a.local_runs) if cmd == "transfer" else []
        fn = lambda: strategies.run(name, cfg, a.decompose_run, local, getattr(a, "coarse_run", "") or None)  # noqa: E731
    else:
        run_id = _open_run(a, "evaluate", "evaluate")
        fn = lambda: evaluate.evaluate(cfg, a.decompose_run, _ids("local_runs", a.local_runs),  # noqa: E731
                                       a.coarse_run, a.global_run or None, a.registered_model_name)
    with step_run(run_id) as run:
        fn()
    say(f"{cmd} finished: run {run_id}; runs table: {ui_link(run.info.experiment_id)}")
    return 0


def _run_full(a: argparse.Namespace) -> int:
    from .config import parse_bool, parse_count, parse_strategies
    from .pipeline.full import FullOptions, full
    from .tracking import create_child, setup, step_run

    cfg = _config(a)
    opts = FullOptions(run_global=parse_bool("global", a.run_global), gpus=a.gpus,
                       jobs_per_gpu=parse_count("jobs_per_gpu", a.jobs_per_gpu),
                       max_parallel=parse_count("max_parallel", a.max_parallel),
                       force=parse_bool("force", a.force), registered_model_name=a.registered_model_name,
                       strategies=parse_strategies(a.strategies))
    from .devices import parse_gpus

    parse_gpus(opts.gpus)  # checked before any heavy work
    exp = setup()
    run_id = a.run_id or os.environ.pop("MLFLOW_RUN_ID", "") or create_child(exp, None, "full", "full", key="")
    with step_run(run_id):
        full(cfg, opts)
    return 0


def _predict(a: argparse.Namespace) -> int:
    import mlflow
    import numpy as np

    from .data import read_input

    try:
        model = mlflow.pyfunc.load_model(a.model)
    except Exception as e:  # noqa: BLE001
        raise InputError("model", a.model, f"a loadable MLflow model URI ({type(e).__name__})") from None
    inner = model.unwrap_python_model()
    shape = tuple(inner.decomposition.image_shape)
    names, arrays = [], []
    for f in a.files:  # a .npy may hold a batch
        x = read_input(f, shape)
        batch = x if x.shape != shape else x[None]
        names += [f] if batch is not x else [f"{f}[{i}]" for i in range(len(batch))]
        arrays.append(batch)
    from .serving import check_input

    try:
        probs = inner.predict(None, check_input(np.concatenate(arrays), shape))
    except mlflow.exceptions.MlflowException as e:
        raise InputError("files", " ".join(a.files), e.message) from None
    for f, p in zip(names, probs):
        k = int(p.argmax())
        print(f"{f}\t{inner.class_names[k]}\t{p[k]:.4f}")
    return 0


def _profile(a: argparse.Namespace) -> int:
    from .profiling import profile_preset

    rows = profile_preset(a.preset)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'network':8} {'params':>10} {'FLOPs':>14} {'MFLOPs(paper)':>14} {'TtEval ms':>10}")
        for k, r in rows.items():
            print(f"{k:8} {r['params']:>10,} {r['flops']:>14,} {r['paper_mflops']:>14.4f} {r['tteval_ms']:>10.1f}")
    return 0


def _presets(a: argparse.Namespace) -> int:
    from . import presets

    print(presets.describe(a.name) if a.name else "\n".join(presets.listing()))
    return 0


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        a = build_parser().parse_args(argv)
        handler = {"full": _run_full, "predict": _predict, "profile": _profile, "presets": _presets}
        return handler.get(a.command, _run_step)(a)
    except InputError as e:
        _fail_open_run(str(e))
        if debug:
            raise
        print(f"ddmlflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddmlflow: interrupted; open runs marked KILLED", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line unless --debug
        if debug:
            raise
        print(f"ddmlflow: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _fail_open_run(message: str) -> None:
    """A run opened for us by ``mlflow run`` is marked FAILED with the message as a tag."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        from .tracking import end_run

        end_run(run_id, "FAILED", message)
    except Exception:  # noqa: BLE001 - the message on stderr is what matters
        pass


if __name__ == "__main__":
    sys.exit(main())
