"""What a user sees: the live progress display, the quiet stderr, the CLI's small manners."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

from ddmlflow import console, progress
from ddmlflow.cli import _verbose, build_parser

CHATTER = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796585757.817347    3131 port.cc:153] oneDNN custom operations are on.\n"
    b"E0000 00:00:1796585761.895778    3131 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
)
EMIT = (
    "import os, sys\nfrom ddmlflow import console\nconsole.setup()\n"
    f"os.write(2, {CHATTER!r})\nprint('ours', file=sys.stderr)\nos.write(2, b'a C++ line of its own\\n')\n"
)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _runs(n: int, epochs_logged: list[int]) -> list[str]:
    import mlflow

    from ddmlflow.tracking import create_child, setup

    exp = setup()
    ids = [create_child(exp, None, f"train_local/{k:02d}", "train_local", "") for k in range(n)]
    client = mlflow.MlflowClient()
    later = int(time.time() * 1000) + 60_000  # epochs of this attempt: logged after the display starts
    for run_id, epochs in zip(ids, epochs_logged):
        if epochs:
            client.set_tag(run_id, "ddmlflow.pid", "1")
        for e in range(epochs):
            client.log_metric(run_id, "val_accuracy", 0.25 * (e + 1), timestamp=later + 10_000 * e, step=e)
    return ids


def test_display_shows_epoch_accuracy_eta_then_the_end(mlflow_env, monkeypatch):
    import mlflow

    ids = _runs(3, [2, 0, 4])
    mlflow.MlflowClient().set_terminated(ids[2], "FINISHED")
    term = _Terminal()
    monkeypatch.setattr(console, "stream", lambda: term)
    trainings = [progress.Training(f"train_local/{k:02d}", r, epochs=5) for k, r in enumerate(ids)]
    with progress.Display(trainings, every_s=3600) as d:  # no timed redraw: the exit draws the last frame
        d.counts({"done": 1, "running": 1, "failed": 0, "pending": 1, "elapsed_s": 12.0})
        console.say("a line that stays")
    out = term.getvalue()
    assert "[ddmlflow] a line that stays\n" in out and "\x1b[" in out  # above the block, then redrawn
    last = out.rsplit("\x1b[J", 1)[-1].splitlines()
    assert last[0] == "trainings: 1 done, 1 running, 0 failed, 1 waiting (12 s)"
    assert last[1].startswith("  train_local/00: epoch 2/5, val_acc 0.5000, ETA ")
    assert last[2] == "  train_local/01: waiting"
    assert last[3] == "  train_local/02: finished after 4 epochs, val_acc 1.0000"
    assert console._display is None


def test_display_without_a_terminal_prints_one_line_per_event(mlflow_env, monkeypatch):
    ids = _runs(2, [1, 0])
    out = io.StringIO()
    monkeypatch.setattr(console, "stream", lambda: out)
    t = [progress.Training("train_global", ids[0], epochs=3), progress.Training("train_local/00", ids[1], 3)]
    d = progress.Display(t, every_s=3600)
    d.poll()
    d._show()
    d._show()  # nothing new: nothing printed twice
    assert out.getvalue().splitlines() == [ln for ln in out.getvalue().splitlines() if "\x1b" not in ln]
    assert [ln.split(", ETA")[0] for ln in out.getvalue().splitlines()] == [
        "[ddmlflow] train_global: epoch 1/3, val_acc 0.2500"
    ]


def test_cxx_log_lines_are_dropped_unless_verbose(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    quiet = subprocess.run([sys.executable, "-c", EMIT], capture_output=True, env=env, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr.decode().splitlines() == ["ours", "a C++ line of its own"]
    loud = subprocess.run(
        [sys.executable, "-c", EMIT], capture_output=True, timeout=120, env={**env, console.VERBOSE_ENV: "true"}
    )
    assert b"oneDNN" in loud.stderr and b"cuInit" in loud.stderr and b"ours" in loud.stderr


def test_verbose_flag_entry_point_names_and_a_closed_pipe():
    assert _verbose(["full", "--verbose"]) is True and _verbose(["full", "--verbose", "false"]) is False
    assert _verbose(["full", "--verbose=true", "--epochs", "2"]) is True and _verbose(["full"]) is None
    p = build_parser()
    assert p.parse_args(["train_global", "--decompose-run", "r1"]).step == "train_global"
    assert (
        p.parse_args(["train-global", "--decompose-run", "r1", "--verbose"]).verbose == "true"
    )  # a bare boolean flag means true
    assert p.parse_args(["full", "--force", "--epochs", "2"]).force == "true"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ddmlflow.cli", "presets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before anything is written (`ddmlflow presets | head -0`)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == b""


def test_eta_counts_from_when_a_training_left_the_queue_not_from_its_run(mlflow_env):
    """A run is created long before it trains (queued behind others): its first epoch's pace is the time
    since it was last seen waiting; a resumed run's hours-old epochs are not this attempt's pace."""
    import mlflow

    from ddmlflow.tracking import setup

    client = mlflow.MlflowClient()
    hour_ago = int(time.time() * 1000) - 3600 * 1000
    run_id = client.create_run(setup(), start_time=hour_ago, run_name="strategy/transfer").info.run_id
    t = progress.Training("strategy/transfer", run_id, epochs=11)
    d = progress.Display([t], every_s=3600)
    d.poll()
    assert t.status == "waiting" and t.per_epoch_s is None and t.queued_ms > hour_ago
    client.set_tag(run_id, "ddmlflow.pid", "1")
    client.log_metric(run_id, "val_accuracy", 0.5, timestamp=t.queued_ms + 2000, step=0)
    d.poll()
    assert (
        t.status == "RUNNING"
        and t.per_epoch_s == 2.0
        and t.line() == ("strategy/transfer: epoch 1/11, val_acc 0.5000, ETA 20s")
    )
    client.log_metric(run_id, "val_accuracy", 0.6, timestamp=t.queued_ms + 5000, step=1)
    d.poll()
    assert t.per_epoch_s == 3.0  # from the second epoch on: between epochs, not since the start

    assert progress.pace([hour_ago, hour_ago + 60_000], hour_ago + 120_000) is None  # an earlier attempt's
    assert progress.pace([hour_ago, hour_ago + 60_000, hour_ago + 70_000], hour_ago + 65_000) == 5.0
    assert progress.pace([0, 4_000, 5_000, 6_000, 7_000], 0) == 1.0  # the last three intervals
