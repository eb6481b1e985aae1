"""Live progress of the trainings a command waits for: epoch i/N, validation accuracy, ETA.

The trainings run in other processes (process, packed and Ray executors) or in
this one, and every one logs each epoch to its own run. So the display reads
the store, whatever the executor: what it shows is what MLflow holds. On a
terminal it redraws one line per training in place; elsewhere (a CI log, a
pipe) it prints one line per event: a training's epoch, its end, the counts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from . import console
from .tags import PID_TAG
from .tracking import retry

METRIC = "val_accuracy"  # logged once per epoch by every training (step = epoch)


@dataclass
class Training:
    name: str
    run_id: str
    epochs: int  # N, the most it trains (early stopping may end it sooner)
    done: int = 0  # epochs finished (a resumed run counts its earlier ones)
    val_acc: float | None = None
    status: str = "waiting"  # waiting | RUNNING | FINISHED | FAILED | KILLED
    per_epoch_s: float | None = None
    shown: str = ""  # the last event line printed (not on a terminal)
    queued_ms: int = 0  # the last time it was seen not started: this attempt's training began after it

    def line(self) -> str:
        if self.status in ("FINISHED", "FAILED", "KILLED"):
            acc = "" if self.val_acc is None else f", val_acc {self.val_acc:.4f}"
            return f"{self.name}: {self.status.lower()} after {self.done} epochs{acc}"
        if not self.done:
            return f"{self.name}: {'starting' if self.status == 'RUNNING' else 'waiting'}"
        eta = "" if self.per_epoch_s is None else f", ETA {_span(self.per_epoch_s * (self.epochs - self.done))}"
        return f"{self.name}: epoch {self.done}/{self.epochs}, val_acc {self.val_acc:.4f}{eta}"


def _span(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def epochs_of(step: str, cfg) -> int:
    """The epochs a training step runs at most (the coarse net has its own)."""
    return int(cfg.coarse_epochs if step == "train_coarse" else cfg.epochs)


class Display:
    """``with Display(trainings): ...`` shows them while the block runs; ``counts`` takes the executor's."""

    def __init__(self, trainings: list[Training], every_s: float | None = None):
        self.trainings, self.out = trainings, console.stream()
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.every_s = every_s if every_s is not None else (2.0 if self.tty else 5.0)
        self.header = f"trainings: {len(trainings)} to go" if len(trainings) > 1 else ""
        self.drawn = 0
        self._stop = threading.Event()
        self._ended_before: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name="ddmlflow-progress", daemon=True)

    def __enter__(self) -> Display:
        now = _now_ms()
        for t in self.trainings:
            t.queued_ms = max(t.queued_ms, now)
        self._ended_before = self._earlier_ends()
        console.attach(self)
        self._thread.start()
        return self

    def _earlier_ends(self) -> dict[str, int]:
        """The end times of the runs that an earlier attempt left ended (FAILED, KILLED): a resumed run keeps
        that status until its process starts it again, which is no news of this attempt."""
        try:
            import mlflow

            client = mlflow.MlflowClient()
            runs = [retry(client.get_run, t.run_id) for t in self.trainings]
            return {r.info.run_id: r.info.end_time for r in runs if r.info.status in ("FAILED", "KILLED")}
        except Exception:  # noqa: BLE001 - the display must never fail the command
            return {}

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            self.poll()
        except Exception:  # noqa: BLE001 - the display must never fail the command
            pass
        with console._lock:
            self._show()
            self.drawn = 0  # the last frame stays on the screen
            console.detach()

    def counts(self, s: dict) -> None:
        """The executor's counts (done, running, failed, waiting, elapsed)."""
        self.header = (
            f"trainings: {s['done']} done, {s['running']} running, {s['failed']} failed, "
            f"{s['pending']} waiting ({s['elapsed_s']:.0f} s)"
        )
        if not self.tty:
            self.above(f"[ddmlflow] {self.header}")

    def above(self, line: str) -> None:
        """A line that stays (``console.say``): above the live block on a terminal."""
        with console._lock:
            self._clear()
            print(line, file=self.out, flush=True)
            self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a busy store: try again next time
                continue
            with console._lock:
                self._show()

    def poll(self) -> None:
        """Each unfinished training's status, epochs done, last val_accuracy and time per epoch."""
        import mlflow

        client = mlflow.MlflowClient()
        for t in self.trainings:
            if t.status in ("FINISHED", "FAILED", "KILLED"):
                continue
            now = _now_ms()
            run = retry(client.get_run, t.run_id)
            started = PID_TAG in run.data.tags  # the driver creates every run before any starts
            t.status = run.info.status if run.info.status != "RUNNING" or started else "waiting"
            if t.status in ("FAILED", "KILLED") and self._ended_before.get(t.run_id) == run.info.end_time:
                t.status = "waiting"  # the earlier attempt's end; this one has not started the run yet
            history = sorted(retry(client.get_metric_history, t.run_id, METRIC), key=lambda m: m.step)
            if t.status == "waiting" and not any(m.timestamp >= t.queued_ms for m in history):
                t.queued_ms = now
            if history:
                t.done, t.val_acc = history[-1].step + 1, history[-1].value
                t.per_epoch_s = pace([m.timestamp for m in history], max(run.info.start_time, t.queued_ms))

    def _show(self) -> None:
        if self.tty:
            self._clear()
            self._draw()
            return
        for t in self.trainings:  # one line per event
            line = t.line()
            if line != t.shown and (t.done or t.status != "waiting"):
                t.shown = line
                print(f"[ddmlflow] {line}", file=self.out, flush=True)

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's first line, erase to the end
            self.drawn = 0

    def _draw(self) -> None:
        if not self.tty or console._display is not self:
            return
        lines = ([self.header] if self.header else []) + [f"  {t.line()}" for t in self.trainings]
        self.out.write("".join(f"{ln}\n" for ln in lines))
        self.out.flush()
        self.drawn = len(lines)


def watch(trainings: list[Training]):
    """A live display of ``trainings`` (a no-op context when there are none)."""
    import contextlib

    return Display(trainings) if trainings else contextlib.nullcontext()


def pace(times_ms: list[int], began_ms: int) -> float | None:
    """Seconds per epoch of this attempt, from its epochs' log times: those since ``began_ms`` (a resumed
    run's earlier epochs may be hours old; a queued run was created long before it started), the last
    three intervals of them, or the first epoch's time since ``began_ms``; None before its first epoch."""
    ours = [t for t in times_ms if t >= began_ms]
    if not ours:
        return None
    recent = ours[-4:] if len(ours) > 1 else [began_ms, ours[0]]
    return max(0.0, (recent[-1] - recent[0]) / 1000 / (len(recent) - 1))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
