"""GPU discovery and k mod G pinning, without importing TensorFlow in the parent.

TensorFlow reads ``CUDA_VISIBLE_DEVICES`` once, at import: a local training
process must have it set before it starts, so the parent finds the GPUs with
``nvidia-smi`` and gives each child its own variable.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from .errors import require
from .tags import CUDA_VISIBLE_DEVICES_TAG, DEVICE_TAG, HOST_TAG, ONEDNN_TAG, PID_STARTED_TAG, PID_TAG, TF_THREADS_TAG


def discover_gpus() -> list[str]:
    """GPU indices from ``nvidia-smi`` (or NVML); [] when there is none."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            return parse_nvidia_smi(out)
        except (subprocess.SubprocessError, OSError):
            pass
    try:
        import pynvml  # optional

        pynvml.nvmlInit()
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no NVML means no GPU for us
        return []


def parse_nvidia_smi(text: str) -> list[str]:
    """GPU indices from ``nvidia-smi --query-gpu=index --format=csv,noheader``: one per line."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_gpus(value: str) -> list[str]:
    """``auto`` discovers; ``none`` (or empty) means CPU; ``0,1,2`` names them."""
    v = str(value).strip().lower()
    if v in ("auto", ""):
        return discover_gpus()
    if v in ("none", "cpu", "-1"):
        return []
    ids = [s.strip() for s in v.split(",") if s.strip()]
    require(all(s.isdigit() for s in ids), "gpus", value, "auto, none, or comma-separated GPU indices like 0,1,2,3")
    return ids


def pin(k: int, gpus: list[str]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for local k: GPU k mod G, or '' (hidden: CPU) without GPUs."""
    return gpus[k % len(gpus)] if gpus else ""


def configure_tensorflow() -> str:
    """In a training process: memory growth on every visible GPU; returns the device used.

    Visible, not present: the packed executor's driver hides its GPUs from TensorFlow when it
    trains the CPU's jobs itself (``CUDA_VISIBLE_DEVICES`` is only read when TensorFlow starts).
    """
    import tensorflow as tf

    gpus = [g for g in tf.config.list_physical_devices("GPU") if g in tf.config.get_visible_devices("GPU")]
    for g in gpus:
        try:
            tf.config.experimental.set_memory_growth(g, True)
        except RuntimeError:  # already initialised
            pass
    return f"GPU:{os.environ.get('CUDA_VISIBLE_DEVICES', '0')}" if gpus else "CPU"


ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def use_onednn() -> None:
    """oneDNN's CPU kernels for every TensorFlow this package starts, unless the user chose.

    TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI-class features;
    on the 2-core AVX2 EPYC they train the 3D CNN ~3.4x and the 2D VGG3 ~1.25x faster
    (README, "CPU kernels"). Read once, when TensorFlow starts: called on ``import ddmlflow``.
    ``TF_ENABLE_ONEDNN_OPTS=0`` keeps TensorFlow's own kernels (results differ by float rounding).
    """
    os.environ.setdefault(ONEDNN, "1")


def onednn() -> str:
    """Whether this process's TensorFlow runs oneDNN's kernels ("on"/"off")."""
    from tensorflow.python.util import _pywrap_util_port

    return "on" if _pywrap_util_port.IsMklEnabled() else "off"


def process_tags(device: str) -> dict[str, str]:
    """Where and how a training ran: device, ``CUDA_VISIBLE_DEVICES``, TensorFlow's threads and CPU
    kernels, and the process id (the packed executor trains the CPU's non-local jobs in the driver,
    the locals in a worker)."""
    return {
        DEVICE_TAG: device,
        CUDA_VISIBLE_DEVICES_TAG: os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        TF_THREADS_TAG: threads(),
        ONEDNN_TAG: onednn(),
        **process_identity(),
    }


def process_identity() -> dict[str, str]:
    """The process that trains a run (host, pid, its start time): set as the training starts, it tells
    the progress display that the run left the queue, and a rerun whether an earlier trainer still lives."""
    import socket

    import psutil

    return {
        PID_TAG: str(os.getpid()),
        PID_STARTED_TAG: f"{psutil.Process().create_time():.2f}",
        HOST_TAG: socket.gethostname(),
    }


def threads() -> str:
    """This process's TensorFlow threads, as logged with a packed group (0: TensorFlow's default)."""
    import tensorflow as tf

    return (
        f"intra_op={tf.config.threading.get_intra_op_parallelism_threads()},"
        f"inter_op={tf.config.threading.get_inter_op_parallelism_threads()}"
    )


DRIVER_ENV = "DDMLFLOW_DRIVER_PID"


def watch_driver() -> None:
    """A training process started by a driver (``DDMLFLOW_DRIVER_PID``) stops at once, writing nothing more,
    when that driver is gone: a command that takes the driver's claims over then resumes the runs alone."""
    import signal
    import threading
    import time

    driver = os.environ.get(DRIVER_ENV, "")
    if not driver.isdigit() or int(driver) != os.getppid():
        return

    def watch() -> None:
        while os.getppid() == int(driver):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ddmlflow-driver-watch", daemon=True).start()
