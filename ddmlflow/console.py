"""What the terminal shows: our own lines, not the stack's chatter.

By default a command prints its progress and result and nothing else: no
TensorFlow C++ log lines (TF >= 2.16 writes some through absl before
``TF_CPP_MIN_LOG_LEVEL`` is read, so they are filtered on file descriptor 2),
no MLflow INFO lines or download bars, no raw Keras epoch lines (the live
display in ``progress.py`` shows the epochs). ``--verbose`` (``-P verbose=true``)
shows everything. The choice travels to child processes in ``DDMLFLOW_VERBOSE``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import re
import sys
import threading

VERBOSE_ENV = "DDMLFLOW_VERBOSE"
# absl/TSL C++ log lines, not the fatal ones ("I0000 00:00:1796585757.817347    3131 port.cc:153] ...") and absl's preamble
_CHATTER = re.compile(rb"^(?:[IWE]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\]|WARNING: All log messages before absl::)")
_lock = threading.RLock()
_display = None  # the live progress display, if one is drawn (progress.Display)
_stderr = None  # the terminal past the filter, once it is installed; else sys.stderr as it is now
_filtering = False  # _filter_fd2 ran (it runs once)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


def keras_verbose() -> int:
    """``verbose=`` for Keras' ``fit``: one line per epoch only when asked for."""
    return 2 if verbose() else 0


def setup(verbose_: bool | None = None) -> None:
    """Quiet the stack for this process and the ones it starts (call before TensorFlow or MLflow load)."""
    if verbose_ is not None:
        os.environ[VERBOSE_ENV] = "true" if verbose_ else "false"
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # also the CUDA probe's 'failed call to cuInit'
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _filter_fd2()


def _filter_fd2() -> None:
    """Pass file descriptor 2 through a thread that drops C++ log lines; our lines bypass it.

    Only in a process whose ``sys.stderr`` is its own (not under pytest's capture), once.
    """
    global _stderr, _filtering
    if _filtering or sys.stderr is not sys.__stderr__:
        return
    _filtering = True
    try:
        sys.stderr.flush()
        real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except OSError:
        return
    out = os.fdopen(real, "w", buffering=1, errors="replace")

    def pump() -> None:
        with os.fdopen(r, "rb") as pipe:
            for line in pipe:
                if not _CHATTER.match(line):
                    with _lock:
                        out.buffer.write(line)
                        out.flush()

    thread = threading.Thread(target=pump, name="ddmlflow-stderr", daemon=True)
    thread.start()
    sys.stderr = _stderr = out  # Python's own writes skip the pipe (and keep their order with ours)

    def drain() -> None:  # at exit: what is still in the pipe reaches the terminal
        try:
            os.dup2(real, 2)
        except OSError:
            return
        thread.join(timeout=2)

    atexit.register(drain)


@contextlib.contextmanager
def hushed():
    """A library call's own prints, unless verbose (MLflow's "Successfully registered model ...")."""
    if verbose():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def stream():
    """Where our lines go: the terminal (stderr), past the filter."""
    return _stderr or sys.stderr


def say(msg: str) -> None:
    """One line of ours; above the live display when one is drawn."""
    with _lock:
        if _display is not None:
            _display.above(f"[ddmlflow] {msg}")
        else:
            print(f"[ddmlflow] {msg}", file=stream(), flush=True)


def attach(display) -> None:
    global _display
    with _lock:
        _display = display


def detach() -> None:
    global _display
    with _lock:
        _display = None
