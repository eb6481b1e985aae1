"""The ``ddmlflow`` command: one subcommand per step, the MLproject's parameter names.

Bad input: one line on stderr naming the parameter, exit code 2, no traceback
(``--debug`` shows it), and the MLflow run (if one was opened) marked FAILED. A
run that ``mlflow run`` opened fails where the command would have logged: in its
experiment, under its name. Subcommands take the entry-point names too (``train_global``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from . import console, presets
from .commands import COMMANDS
from .config import ReproduceOptions, RunConfig, TrackingOptions, add_options, options, parse_options, resolve
from .devices import watch_driver
from .errors import InputError
from .steps import STEPS, trains


class _Parser(argparse.ArgumentParser):
    """No prefix matching (``--epoch`` is not ``--epochs``); errors as one line, exit 2."""

    subcommands: dict[str, _Parser]  # the top-level parser's, by name (build_parser sets it)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message):  # one line, exit 2 (argparse's own convention)
        raise InputError("arguments", " ".join(sys.argv[1:])[:200], message)

    def parse_args(self, args=None, namespace=None):
        a, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = self.subcommands.get(getattr(a, "command", ""), self) if hasattr(self, "subcommands") else self
            unknown_option(sub, extra, getattr(a, "command", ""))
        return a


def unknown_option(parser: argparse.ArgumentParser, extra: list[str], command: str) -> None:
    """Refuse what the parser does not know, naming the nearest valid parameter (e.g. ``epoch`` → ``epochs``)."""
    import difflib

    flags = [f for f in extra if f.startswith("--")]
    if not flags:
        raise InputError("arguments", " ".join(extra)[:200], "unexpected (parameters are --name value)")
    name = flags[0][2:].split("=", 1)[0].replace("-", "_")
    known = [o.lstrip("-").replace("-", "_") for o in parser._option_string_actions if o.startswith("--")]
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}?" if near else "see --help for the parameters"
    raise InputError(
        name,
        extra[extra.index(flags[0]) + 1] if len(extra) > extra.index(flags[0]) + 1 else "",
        f"not a parameter of {command or 'ddmlflow'}; {hint}",
    )


def _run_args(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        add_options(p, RunConfig)
    add_options(p, TrackingOptions)
    p.add_argument("--run-id", default="", help="log into this existing run (used by `full` and `mlflow run`)")
    p.add_argument("--parent-run", default="", help="nest the new run under this parent run")


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per registered step, plus ``full`` and the tools; options derived from the schema."""
    p = _Parser(prog="ddmlflow", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p.subcommands = sub.choices
    for step in STEPS.values():
        s = sub.add_parser(step.command, help=step.help, aliases=_alias(step.command))
        s.set_defaults(step=step.name)
        _run_args(s)
        for i in step.inputs:
            s.add_argument(
                f"--{i.name.replace('_', '-')}",
                dest=i.name,
                required=i.required and i.kind != "text",
                default="",
                help=i.help,
            )
    for c in COMMANDS.values():
        s = sub.add_parser(c.command, help=c.help, aliases=_alias(c.command))
        s.set_defaults(chain=c.name)
        _run_args(s, c.config)
        add_options(s, c.options_class())
    s = sub.add_parser("predict", help="class and probability for image, .npy or NIfTI files")
    s.add_argument("--model", required=True, help="e.g. models:/ddmlflow-shapes2d@champion")
    s.add_argument("files", nargs="+")
    s = sub.add_parser("profile", help="KLW Table 2 row of a preset: params, FLOPs, TtEval")
    s.add_argument("--preset", required=True)
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("presets", help="list the presets, or show one")
    s.add_argument("name", nargs="?")
    s = sub.add_parser("mlproject", help="write MLproject and entrypoints/ from the schema and the step registry")
    s.add_argument("--check", action="store_true", help="only say whether the checked-in files are in sync")
    return p


def _alias(command: str) -> list[str]:
    """The MLproject entry point's name (``train_global``) beside the command's (``train-global``)."""
    return [command.replace("-", "_")] if "-" in command else []


def _config(a: argparse.Namespace):
    return resolve(
        a.preset, **{o["field"]: getattr(a, o["field"]) for o in options(RunConfig) if o["field"] != "preset"}
    )


def _tracking(a: argparse.Namespace):
    return parse_options(TrackingOptions, **{o["field"]: getattr(a, o["field"]) for o in options(TrackingOptions)})


def _open_run(a: argparse.Namespace, cfg, name: str, step: str) -> str:
    """The run to log into: given (``--run-id``: used as is), from ``mlflow run``, or a new one."""
    from . import describe  # lazy: not needed by --help and presets (their start-up time)
    from .tracking import open_run  # lazy: MLflow; --help and presets must not load it

    if a.run_id:
        return a.run_id
    track = _tracking(a)
    return open_run(
        os.environ.pop("MLFLOW_RUN_ID", ""),
        track.experiment_name,
        describe.experiment_name(cfg),
        track.run_name or name,
        step,
        describe.cfg_tags(cfg),
        parent_id=a.parent_run,
    )


def _run_step(a: argparse.Namespace) -> int:
    from .tracking import say, step_run, ui_link  # lazy: MLflow; --help and presets must not load it

    step = STEPS[a.step]
    cfg = _config(a)
    inputs = {i.name: i.parse(getattr(a, i.name)) for i in step.inputs}
    run_id = _open_run(a, cfg, step.run_name(inputs), step.name)
    with step_run(run_id, system_metrics=trains(step.name)) as run:
        step.call(cfg, **inputs)
    say(f"{a.command} finished: run {run_id}; runs table: {ui_link(run.info.experiment_id)}")
    return 0


def _run_command(a: argparse.Namespace) -> int:
    """A chain (``full``, ...): options checked first, then one parent run (given by ``mlflow run``, or new)."""
    c = COMMANDS[a.chain]
    cfg = _config(a) if c.config else None
    cls = c.options_class()
    opts: object = parse_options(cls, **{o["field"]: getattr(a, o["field"]) for o in options(cls)})
    if getattr(opts, "estimate", False):  # a dry run: no parent run, nothing trains
        from .commands.reproduce import estimate  # lazy: MLflow; --help must not load it

        assert isinstance(opts, ReproduceOptions)  # the one command with `estimate`
        estimate(opts)
        return 0
    c.run(cfg, opts, a.run_id or os.environ.pop("MLFLOW_RUN_ID", ""), _tracking(a))
    return 0


def _mlproject(a: argparse.Namespace) -> int:
    from . import mlproject  # lazy: not needed by --help and presets (their start-up time)

    stale = mlproject.stale()
    if a.check:
        print("in sync" if not stale else "out of sync: " + ", ".join(stale))
        return 1 if stale else 0
    mlproject.write()
    print("wrote " + (", ".join(stale) if stale else "nothing (already in sync)"))
    return 0


def _predict(a: argparse.Namespace) -> int:
    import mlflow
    import numpy as np

    from .data import read_input  # lazy: SciPy, PIL; --help and presets must not load them

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
    from .serving import check_input  # lazy: MLflow; --help and presets must not load it

    try:
        out = inner.predict(None, check_input(np.concatenate(arrays), shape))
    except mlflow.exceptions.MlflowException as e:
        raise InputError("files", " ".join(a.files), e.message) from None
    for f, (_, row) in zip(names, out.iterrows()):  # file, class name, its probability
        print(f"{f}\t{row['label']}\t{row[row['label']]:.4f}")
    return 0


def _profile(a: argparse.Namespace) -> int:
    from .profiling import profile_preset  # lazy: TensorFlow; --help and presets must not load it

    rows = profile_preset(a.preset)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'network':8} {'params':>10} {'FLOPs':>14} {'MFLOPs(paper)':>14} {'TtEval ms':>10}")
        for k, r in rows.items():
            print(f"{k:8} {r['params']:>10,} {r['flops']:>14,} {r['paper_mflops']:>14.4f} {r['tteval_ms']:>10.1f}")
    return 0


def _presets(a: argparse.Namespace) -> int:
    print(presets.describe(a.name) if a.name else "\n".join(presets.listing()))
    return 0


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _verbose(argv: list[str]) -> bool | None:
    """``--verbose`` / ``--verbose true`` (read before anything loads: it decides what TensorFlow prints)."""
    for i, arg in enumerate(argv):
        if arg == "--verbose":
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "true"
        elif arg.startswith("--verbose="):
            value = arg.split("=", 1)[1]
        else:
            continue
        return value.strip().lower() in ("true", "1", "yes")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    launcher = os.environ.get("MLFLOW_RUN_ID", "")  # the run `mlflow run` opened (popped once it is used)
    signal.signal(signal.SIGTERM, _on_sigterm)
    console.setup(_verbose(argv))
    if "ddmlflow.tracking" in sys.modules:  # an earlier main() in this process (tests) opened its own runs
        sys.modules["ddmlflow.tracking"]._OPENED.clear()
    watch_driver()  # a training started by a driver stops with it
    try:
        a = build_parser().parse_args(argv)
        handler = {"predict": _predict, "profile": _profile, "presets": _presets, "mlproject": _mlproject}
        code = handler.get(a.command, _run_command if getattr(a, "chain", "") else _run_step)(a)
        sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
        return code
    except InputError as e:
        _fail_open_run(str(e), launcher, argv)
        if debug:
            raise
        print(f"ddmlflow: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ddmlflow presets | head`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command ended by a closed pipe
    except KeyboardInterrupt:
        print("ddmlflow: interrupted; open runs marked KILLED", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        _fail_open_run(f"{type(e).__name__}: {e}", launcher, argv)
        print(f"ddmlflow: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _fail_open_run(message: str, launcher: str, argv: list[str]) -> None:
    """Mark FAILED, with the message as its reason, the run this command opened, if it is still open; a
    launcher run of ``mlflow run`` that was never used first becomes the run the command would have made."""
    try:
        from .tracking import end_run, get_run, opened_runs  # lazy: MLflow; --help and presets must not load it

        opened = opened_runs()
        if launcher and not opened:
            opened = [_open_as_intended(launcher, argv)]
        for run_id in opened:
            if get_run(run_id).info.status == "RUNNING":
                end_run(run_id, "FAILED", message)
        if launcher and launcher not in opened and get_run(launcher).info.status == "RUNNING":
            end_run(launcher, "FAILED", message)
    except Exception:  # noqa: BLE001 - the message on stderr is what matters
        pass


def _open_as_intended(launcher: str, argv: list[str]) -> str:
    """The run a command refused for bad input would have logged into (its experiment and name), from the
    parameters that were valid."""
    from . import describe  # lazy: not needed by --help and presets (their start-up time)
    from .tracking import open_run  # lazy: MLflow; --help and presets must not load it

    a, _ = build_parser().parse_known_args(argv)
    given = {o["field"]: getattr(a, o["field"], "") for o in options(RunConfig) if o["field"] != "preset"}
    cfg = None
    for _ in range(len(given) + 1):  # drop the bad values one by one: what is left names the run
        try:
            cfg = resolve(getattr(a, "preset", ""), **given)
            break
        except InputError as e:
            if given.pop(e.param, None) is None:
                break
    chain = getattr(a, "chain", "")
    step = chain or getattr(a, "step", "") or "full"
    if cfg is None:
        name, default_exp, tags = step, "ddmlflow", {}
    elif chain:
        name = describe.parent_name(cfg) if chain == "full" else f"{chain}-{describe.parent_name(cfg)}"
        default_exp, tags = describe.experiment_name(cfg), describe.cfg_tags(cfg)
    else:
        name, default_exp, tags = STEPS[step].name, describe.experiment_name(cfg), describe.cfg_tags(cfg)
    if chain and not COMMANDS[chain].config:
        default_exp = f"ddmlflow-{chain}"
    track = {o["field"]: getattr(a, o["field"], "") for o in options(TrackingOptions)}
    return open_run(
        launcher, track.get("experiment_name") or "", default_exp, track.get("run_name") or name, step, tags
    )


if __name__ == "__main__":
    sys.exit(main())
