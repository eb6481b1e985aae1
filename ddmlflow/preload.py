"""Import heavy modules (TensorFlow, Keras) in a background thread, once per process.

A process that will need TensorFlow later (the ``full`` parent, for the coarse
net) imports it while it waits for its workers, not after. Every later import
of those modules in the main thread first calls ``wait``: two threads importing
the same package tree at once can deadlock on Python's module locks.
"""

from __future__ import annotations

import importlib
import threading

_thread: threading.Thread | None = None


def start(*modules: str) -> None:
    """Import ``modules`` in a daemon thread (no-op when a preload is already running or done)."""
    global _thread
    if _thread is None:
        _thread = threading.Thread(
            target=lambda: [importlib.import_module(m) for m in modules], daemon=True, name="ddmlflow-preload"
        )
        _thread.start()


def wait() -> None:
    """Until the preload has finished; a Ctrl-C still gets through (short joins, not one long one)."""
    while _thread is not None and _thread.is_alive():
        _thread.join(0.2)
