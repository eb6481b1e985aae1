"""The one reuse rule: find, reuse, resume or create the run of a step, under a claim.

``full``, each strategy, ``tune``'s searches and ``reproduce``'s rows all get
their runs from ``Reuse.get`` (``inline`` for a step that runs here):

1. the step's key (``keys``: content, code, result-changing parameters, upstream keys);
2. a FINISHED run with that key in the experiment is reused (``force`` skips this);
3. otherwise the key is claimed (``claims``): a live holder elsewhere is waited for,
   then its run is reused; a dead one is taken over;
4. under the claim, an unfinished run with the key (killed, failed, or its process
   gone) is resumed in place, once no process of it still runs, and adopted into
   this parent unless its own parent FINISHED; else a new run is created, with
   its key's ingredients as ``key.json``.

The claim is released when the step's run ends (``release``).
"""

from __future__ import annotations

import os

from . import describe, keys, preload, progress
from .claims import alive, claims
from .config import RunConfig, key_params
from .decomposition import canonical
from .devices import process_identity
from .steps import SEARCHES, STEPS, job_step, trains
from .tags import BOX_TAG, HOST_TAG, KEY_CODE_TAG, KEY_TAG, PARENT_TAG, PID_STARTED_TAG, PID_TAG, SUCCESSOR_TAG
from .tracking import create_child, end_run, find_run, retry, say, step_run

# Code each step runs beyond its own module's imports: the engines that may train it.
TRAINING_CODE = ("pipeline.train", "executors.worker")


def code_roots(step: str) -> tuple[str, ...]:
    """The modules whose import closure computes ``step`` (its registered function's module)."""
    if step in STEPS or step in SEARCHES:
        s = job_step(step)
        module = s.func.split(":")[0]
        return (module, *TRAINING_CODE) if s.training else (module,)
    return {"full": ("commands.full", *TRAINING_CODE)}.get(step, ("commands.tune", "pipeline.tune"))


def config_params(cfg: RunConfig) -> dict[str, str]:
    """The config's result-changing values, the decomposition as resolved (not its spelling or file)."""
    p = key_params(cfg)
    p["decomposition"] = canonical(cfg.decomposition)
    return p


class Reuse:
    """Runs of steps under one parent; ``keys`` maps each run id it handed out to its step key."""

    def __init__(self, cfg: RunConfig, parent_id: str, experiment_id: str, force: bool):
        self.cfg, self.parent, self.exp, self.force = cfg, parent_id, experiment_id, force
        self.keys: dict[str, str] = {}
        self.reused: dict[str, str] = {}
        self.elsewhere: dict[str, tuple[str, str]] = {}  # reused under a FINISHED parent: name -> (run, parent)
        self.adopted: list[str] = []  # moved here from a parent that did not finish
        self.held: dict[str, str] = {}  # run id -> claimed key

    def key(self, step: str, inputs: dict, cfg: RunConfig | None = None, extra: dict | None = None) -> dict:
        """The ingredients of ``step``'s key (``key.json``); ``extra``: further result-changing values."""
        cfg = cfg or self.cfg
        upstream, plain = {}, {}
        for k, v in inputs.items():
            if k.endswith("_run") or k.endswith("_runs"):
                upstream[k] = self._upstream(v)
            else:
                plain[k] = v
        data = keys.data_digest(cfg.dataset, cfg.data_dir) if step in ("decompose", "full") else None
        return keys.ingredients(step, code_roots(step), {**config_params(cfg), **(extra or {})}, upstream, plain, data)

    def _upstream(self, v):
        if isinstance(v, dict):
            return {k: self._upstream(x) for k, x in sorted(v.items())}
        if isinstance(v, (list, tuple)):
            return [self._upstream(x) for x in v]
        if not v:
            return v
        if v not in self.keys:  # a run made elsewhere (e.g. tune's local_runs): its own key, else its id
            self.keys[v] = retry(_client().get_run, v).data.tags.get(KEY_TAG) or f"run:{v}"
        return self.keys[v]

    def get(
        self,
        step: str,
        name: str,
        inputs: dict,
        cfg: RunConfig | None = None,
        tags: dict | None = None,
        extra: dict | None = None,
    ) -> tuple[str, bool]:
        """(run id, already finished) for a step; an unfinished one is claimed for this process."""
        ingredients = self.key(step, inputs, cfg, extra)
        key = keys.digest(ingredients)
        found = None if self.force else find_run(self.exp, key, finished_only=True)
        if found is None:
            claims().acquire(key, name)
            found = None if self.force else find_run(self.exp, key)
            if found is not None and found.info.status == "FINISHED":
                claims().release(key)
        else:  # finished: a claim left by a holder killed after it finished goes now
            claims().drop_dead(key, name)
        if found is not None:
            rid, done = found.info.run_id, found.info.status == "FINISHED"
            self.keys[rid] = key
            if not done:
                self.held[rid] = key
                _wait_for_trainer(found, name)
            say(f"{name}: {'reusing finished' if done else 'resuming unfinished'} run {rid}")
            if done:
                self.reused[name] = rid
            old = found.data.tags.get(PARENT_TAG, "")
            if self._adopt(found):
                self.adopted.append(name)
            elif done and old and old != self.parent:
                self.elsewhere[name] = (rid, old)
            return rid, done
        box = (
            {BOX_TAG: str(inputs["box"])} if "box" in inputs else {BOX_TAG: "global"} if step == "train_global" else {}
        )
        rid = create_child(
            self.exp,
            self.parent,
            name,
            step,
            key,
            tags={**describe.cfg_tags(cfg or self.cfg), **box, **(tags or {}), KEY_CODE_TAG: ingredients["code"]},
        )
        retry(_client().log_dict, rid, {**ingredients, "key": key}, "key.json")
        self.keys[rid], self.held[rid] = key, key
        return rid, False

    def __enter__(self) -> Reuse:
        return self

    def __exit__(self, *exc: object) -> None:
        """The command ends (done, failed or interrupted): every claim still held goes."""
        for run_id in list(self.held):
            self.release(run_id)

    def release(self, run_id: str) -> None:
        """The run's step ended (finished or not): others may take it now."""
        key = self.held.pop(run_id, None)
        if key:
            claims().release(key)

    def inline(
        self, step: str, name: str, inputs: dict, fn, *args, extra: dict | None = None, watch: int = 0, **kwargs
    ) -> str:
        """Run a cheap step ``fn(*args, **kwargs)`` in this process, unless reused; its run id."""
        return self.inline_result(step, name, inputs, fn, *args, extra=extra, watch=watch, **kwargs)[0]

    def inline_result(
        self, step: str, name: str, inputs: dict, fn, *args, extra: dict | None = None, watch: int = 0, **kwargs
    ) -> tuple[str, object]:
        """``inline``, with what ``fn`` returned (None when the step was reused: read it from the run);
        ``watch``: show its progress over that many epochs."""
        run_id, done = self.get(step, name, inputs, extra=extra)
        out = None
        if not done:
            try:
                preload.wait()  # the step imports TensorFlow too
                with (
                    progress.watch([progress.Training(name, run_id, watch)] if watch else []),
                    step_run(run_id, system_metrics=trains(step)),
                ):
                    if trains(step):
                        import mlflow

                        retry(mlflow.set_tags, process_identity())
                    out = fn(*args, **kwargs)
            finally:
                self.release(run_id)
        return run_id, out

    def _adopt(self, run) -> bool:
        """Re-parent ``run`` here unless its parent FINISHED (a finished parent keeps its children) or
        is still alive. A RUNNING parent whose process is gone (its claim dead) is closed FAILED first."""
        old = run.data.tags.get(PARENT_TAG)
        if not old or old == self.parent:
            return False
        c = _client()
        prev = retry(c.get_run, old)
        if prev.info.status == "FINISHED":
            return False
        if prev.info.status == "RUNNING":
            held = [k for k in (f"run-{old}", prev.data.tags.get(KEY_TAG)) if k]
            if any(claims().live(k) for k in held):
                return False
            for k in held:  # a dead holder's claim: take it over, then drop it
                claims().acquire(k, f"parent {old}", old)
                claims().release(k)
            end_run(old, "FAILED", f"its process is gone; continued by run {self.parent}")
        retry(c.set_tag, run.info.run_id, PARENT_TAG, self.parent)
        retry(c.set_tag, old, SUCCESSOR_TAG, self.parent)
        return True


def _wait_for_trainer(run, name: str) -> None:
    """Until no process of an unfinished run still trains it on this host (an orphan of a killed driver
    stops by itself, see ``devices.watch_driver``)."""
    import time

    tags = run.data.tags
    said = False
    while tags.get(PID_TAG) != str(os.getpid()) and alive(
        tags.get(HOST_TAG, ""), tags.get(PID_TAG, 0), tags.get(PID_STARTED_TAG)
    ):
        if not said:
            say(f"{name}: waiting for process {tags.get(PID_TAG)} of its earlier training to stop")
            said = True
        time.sleep(0.2)


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()
