"""One Ray task per training: the local fan-out on a Ray cluster (KLW trained their locals on up to 8 GPUs).

Ray schedules, places and retries; we only say what a training needs:
``num_gpus=1/jobs_per_gpu`` on GPUs (Ray sets the worker's
``CUDA_VISIBLE_DEVICES``, so no k mod G here), one CPU otherwise. Each task runs
the registered step in a fresh worker process (``max_calls=1``: TensorFlow reads
its devices once, at import, and keeps its memory), logging into the child run
the driver created, tagged with the node and GPUs Ray gave it.

Faults: a failing task or a dead node is retried once; the retry resumes from
the last finished epoch (the checkpoint in the node's work folder, or the run's
artifacts when the store is a server). A second failure fails that run only.
Ctrl-C cancels every task. Workers elsewhere cannot write the driver's sqlite
file, so with a cluster address ``check`` refuses a local store before any work.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..console import VERBOSE_ENV
from ..errors import InputError
from ..tags import REASON_TAG, ray_tag
from .base import Executor, ExecutorOptions, Job, OnChange, Result, progress_counts, thread_policy, tracking_env


def check(address: str, tracking_uri: str, gpus: tuple[str, ...] = ()) -> None:
    """Before any work: a cluster needs a tracking server; GPUs asked for must exist (else: pending forever)."""
    from ..tracking import is_local_store  # lazy: MLflow; a Ray worker imports this module before run_job sets its env

    if address.strip() and is_local_store(tracking_uri):
        raise InputError(
            "MLFLOW_TRACKING_URI",
            tracking_uri,
            f"Ray workers of ray_address={address} cannot write this local store: start "
            "`mlflow server --backend-store-uri <db> --artifacts-destination <dir>` and set "
            "MLFLOW_TRACKING_URI=http://host:port",
        )
    ray = connect(address)
    if gpus and not ray.cluster_resources().get("GPU", 0):
        raise InputError(
            "gpus", ",".join(gpus), "the Ray cluster has no GPUs (a GPU task would wait forever): use gpus=none"
        )


def connect(address: str = ""):
    """The Ray module, initialised once: an existing connection, the cluster at ``address``, or a local instance."""
    try:
        import ray
    except ImportError:
        raise InputError("executor", "ray", "needs Ray: pip install 'ddmlflow[ray]'") from None
    if not ray.is_initialized():
        import signal
        import threading

        main = threading.current_thread() is threading.main_thread()
        on_term = signal.getsignal(signal.SIGTERM) if main else None
        if address.strip():
            ray.init(address=address.strip(), include_dashboard=False)
        else:  # the machine's CPUs and GPUs, in this process's session
            ray.init(include_dashboard=False)
        if main:  # ray.init makes SIGTERM exit at once; keep ours (Ctrl-C: cancel the tasks, runs KILLED)
            signal.signal(signal.SIGTERM, on_term)
    return ray


def absolute_uri(uri: str) -> str:
    """A relative sqlite/file store as an absolute one: Ray workers do not share the driver's cwd."""
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
            return prefix + str(Path(uri[len(prefix) :]).absolute())
    return uri if "://" in uri or uri == "databricks" else str(Path(uri).absolute())


def run_job(text: str, env: dict) -> dict:
    """In a Ray worker: the job (``Job.to_json``) into its run, output to the node's work folder; returns
    where it ran. A failure raises (Ray retries the task once)."""
    os.environ.update(env)
    os.environ.pop("MLFLOW_RUN_ID", None)  # would resume the driver's run
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ[VERBOSE_ENV] = "true"  # its output goes to its log file: all of it
    import ray

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    if not gpu_ids:  # a CPU task must not grab a GPU of its node (Ray sets the variable for GPU tasks only)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import mlflow

    from ..steps import job_step  # lazy: the step registry; only once the worker's environment is set
    from ..tracking import get_run, retry, train_log  # lazy: MLflow; only once the worker's environment is set

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    job = Job.from_json(text)
    thread_policy(job)
    log = train_log(job.run_id)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    tags = get_run(job.run_id).data.tags
    node = ray.get_runtime_context().get_node_id()
    where = {
        "node_id": node,
        "node_ip": ray.util.get_node_ip_address(),
        "gpu_ids": ",".join(gpu_ids) or "none",
        "pid": str(os.getpid()),
        "attempts": str(int(tags.get(ray_tag("attempts"), "0")) + 1),
        "log": str(log),
        "node_ids": ",".join(filter(None, [tags.get(ray_tag("node_ids"), ""), node])),
    }  # every attempt's node
    if REASON_TAG in tags:  # this is a retry: keep why the first attempt failed, apart
        retry(mlflow.MlflowClient().set_tag, job.run_id, ray_tag("previous_failure"), tags[REASON_TAG])
        retry(mlflow.MlflowClient().delete_tag, job.run_id, REASON_TAG)
    print(
        f"[ddmlflow] {job.name} attempt {where['attempts']} on node {where['node_ip']} "
        f"{where['node_id'][:12]}, GPUs: {where['gpu_ids']}",
        flush=True,
    )
    job_step(job.step).run_into(job.run_id, job.config, job.inputs, tags={ray_tag(k): v for k, v in where.items()})
    return where


def reason(e: BaseException) -> str:
    """One line: the step's own error, or what happened to its worker/node."""
    import ray.exceptions as rex

    cause = getattr(e, "cause", None) if isinstance(e, rex.RayTaskError) else None
    if cause is not None:
        text = str(cause) if isinstance(cause, InputError) else f"{type(cause).__name__}: {cause}"
    elif isinstance(e, rex.WorkerCrashedError):
        text = "its Ray worker died twice (killed, or out of memory?)"
    else:
        text = f"{type(e).__name__}: {e}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


class RayExecutor(Executor):
    def __init__(
        self, address: str = "", jobs_per_gpu: int = 1, gpus: bool = False, max_retries: int = 1, poll_s: float = 1.0
    ):
        super().__init__()
        self.address, self.jobs_per_gpu, self.gpus = address, jobs_per_gpu, gpus
        self.max_retries, self.poll_s = max_retries, poll_s

    @classmethod
    def from_options(cls, o: ExecutorOptions) -> RayExecutor:
        return cls(o.ray_address, jobs_per_gpu=o.jobs_per_gpu, gpus=bool(o.gpus))

    @staticmethod
    def check(opts, tracking_uri: str) -> None:
        check(opts.ray_address, tracking_uri, gpus=tuple(opts.gpus))

    def resources(self) -> dict:
        if self.gpus:
            return {"num_gpus": 1 / self.jobs_per_gpu, "num_cpus": 1}
        return {"num_cpus": 1}

    def _run(self, jobs: list[Job], on_change: OnChange | None) -> list[Result]:
        ray = connect(self.address)
        task = ray.remote(max_calls=1, max_retries=self.max_retries, retry_exceptions=True, **self.resources())(run_job)
        t0 = time.time()
        refs = {}
        env = {"MLFLOW_TRACKING_URI": absolute_uri(tracking_env()["MLFLOW_TRACKING_URI"])}
        for job in jobs:
            refs[task.options(name=job.name).remote(job.to_json(), env)] = job
        pending, done = list(refs), []
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    job = refs[ref]
                    try:
                        where = ray.get(ref)
                        job.log = Path(where["log"])
                        done.append(Result(job, True, "", time.time() - t0))
                    except ray.exceptions.RayError as e:
                        done.append(Result(job, False, reason(e), time.time() - t0))
                    self._finished(done[-1])
                if ready and on_change:
                    on_change(progress_counts(len(jobs), done, len(pending), t0))
        except BaseException:  # Ctrl-C (or anything): stop every task; full closes their runs as KILLED
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return done
