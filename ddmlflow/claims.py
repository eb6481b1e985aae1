"""Claims: one trainer per step at a time, across processes and machines sharing one tracking store.

A claim is a registered model named ``ddmlflow-claim-<step key>``, created by the
process that trains the step and deleted when the step's run ends. The model
registry is used because its names are unique in every MLflow store (sqlite,
another database, a tracking server): creating a name that exists fails, which
makes claiming atomic where run tags (last write wins) could not. While it
trains, a claim shows in the registry with its holder in its description and
tags (host, pid, parent run).

A second process that needs a claimed step waits for it, then reuses the run
(or resumes it, if it failed). A holder that is gone is detected without a
shared filesystem: on the same host by its pid (and the process's start time,
so a reused pid does not count), elsewhere by a heartbeat tag that stopped
changing for ``stale_s`` seconds of the waiter's own clock (no clock skew).
Taking a dead claim over renames it first: a rename to a name derived from the
dead holder's token succeeds once, so two waiters never both take it.

Releases happen at three depths on purpose, each a safety net for the one above:
a training's claim as its future ends (``full.run_and_close``, so a waiter starts
as soon as that step is done, not when the whole parent is), the rest of a
``Reuse``'s claims as it exits (a step that raised before its run ended), and
every claim of the process as the command ends (``commands.Command``: the
parent's own ``run-<id>`` claim, and whatever an interrupted step left). A
release is a no-op for a key the process no longer holds, so the three never
conflict.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid

import psutil
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .tags import (
    CLAIM_HEARTBEAT_TAG,
    CLAIM_HOST_TAG,
    CLAIM_PID_TAG,
    CLAIM_RUN_TAG,
    CLAIM_STARTED_TAG,
    CLAIM_TOKEN_TAG,
    CLAIM_WHAT_TAG,
)
from .tracking import retry, say

PREFIX = "ddmlflow-claim-"


def _code(e: Exception) -> str:
    return getattr(e, "error_code", "") if isinstance(e, MlflowException) else ""


def alive(host: str, pid: str | int, started: str | float | None = None) -> bool | None:
    """Whether process ``pid`` on ``host`` runs (zombies do not); None when ``host`` is another machine."""
    if host != socket.gethostname():
        return None
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return started in (None, "") or abs(p.create_time() - float(started)) < 0.5
    except (psutil.Error, ValueError):
        return False


class Claims:
    """The claims this process holds, and a heartbeat thread that keeps them alive."""

    def __init__(self, beat_s: float = 10.0, stale_s: float = 90.0, poll_s: float = 0.5):
        self.beat_s, self.stale_s, self.poll_s = beat_s, stale_s, poll_s
        self.token = uuid.uuid4().hex[:12]
        me = psutil.Process()
        self.identity = {
            CLAIM_HOST_TAG: socket.gethostname(),
            CLAIM_PID_TAG: str(me.pid),
            CLAIM_STARTED_TAG: f"{me.create_time():.2f}",
            CLAIM_TOKEN_TAG: self.token,
        }
        self.held: dict[str, str] = {}  # key -> what
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @staticmethod
    def name(key: str) -> str:
        return PREFIX + key

    def acquire(self, key: str, what: str, run: str = "") -> None:
        """Hold ``key``: at once if free, after its holder is done (waiting), or taken over from a dead one."""
        c, name, said = MlflowClient(), self.name(key), False
        seen: dict[str, object] = {}  # the holder's heartbeat as last seen, and since when (_dead)
        while key not in self.held:
            try:
                retry(
                    c.create_registered_model,
                    name,
                    tags={**self.identity, CLAIM_HEARTBEAT_TAG: "0", CLAIM_WHAT_TAG: what, CLAIM_RUN_TAG: run},
                    description=f"ddmlflow: `{what}` (run {run or 'new'}) is trained by {self._who(self.identity)};"
                    " removed when its run ends.",
                )
                with self._lock:
                    self.held[key] = what
                self._start()
                return
            except MlflowException as e:
                if _code(e) != "RESOURCE_ALREADY_EXISTS":
                    raise
            holder = self._holder(c, name)
            if holder is None:
                continue  # released meanwhile
            if not self._dead(holder, seen):
                if not said:
                    say(f"{what}: held by {self._who(holder)}; waiting for it to finish")
                    said = True
                time.sleep(self.poll_s)
                continue
            try:  # succeeds for one waiter only: the new name exists once the first has renamed
                retry(c.rename_registered_model, name, f"{name}-gone-{holder.get(CLAIM_TOKEN_TAG, 'x')}")
            except MlflowException as e:
                if _code(e) in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                    continue
                raise
            say(f"{what}: its holder {self._who(holder)} is gone; taking it over")
            with contextlib.suppress(MlflowException):
                retry(c.delete_registered_model, f"{name}-gone-{holder.get(CLAIM_TOKEN_TAG, 'x')}")

    def release(self, key: str) -> None:
        """Give ``key`` up (only if this process holds it)."""
        with self._lock:
            if self.held.pop(key, None) is None:
                return
        c = MlflowClient()
        with contextlib.suppress(MlflowException):
            if (self._holder(c, self.name(key)) or {}).get("token") == self.token:
                retry(c.delete_registered_model, self.name(key))

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)

    def holder(self, key: str) -> dict | None:
        """The tags of the claim on ``key``, or None when nobody holds it."""
        return self._holder(MlflowClient(), self.name(key))

    def drop_dead(self, key: str, what: str) -> None:
        """Remove a claim on ``key`` whose holder on this host is gone (e.g. SIGKILLed after its step
        finished: nobody would acquire it again, so it would stay in the registry)."""
        h = self.holder(key)
        if (
            h is not None
            and alive(h.get(CLAIM_HOST_TAG, ""), h.get(CLAIM_PID_TAG, 0), h.get(CLAIM_STARTED_TAG)) is False
        ):
            self.acquire(key, what)
            self.release(key)

    def live(self, key: str) -> bool:
        """Someone alive holds ``key`` (a holder elsewhere counts as alive until it is seen stale)."""
        h = self.holder(key)
        return h is not None and alive(h.get("host", ""), h.get("pid", 0), h.get("started")) is not False

    @staticmethod
    def _holder(c: MlflowClient, name: str) -> dict | None:
        try:
            return dict(retry(c.get_registered_model, name).tags)
        except MlflowException as e:
            if _code(e) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _dead(self, holder: dict, seen: dict) -> bool:
        """Gone: a dead pid on this host, or a heartbeat unchanged for ``stale_s`` (waiter's clock) elsewhere."""
        here = alive(holder.get(CLAIM_HOST_TAG, ""), holder.get(CLAIM_PID_TAG, 0), holder.get(CLAIM_STARTED_TAG))
        if here is not None:
            return not here
        beat = (holder.get(CLAIM_TOKEN_TAG), holder.get(CLAIM_HEARTBEAT_TAG))
        if seen.get("beat") != beat:
            seen.update(beat=beat, since=time.monotonic())
        return time.monotonic() - seen["since"] > self.stale_s

    @staticmethod
    def _who(h: dict) -> str:
        return f"{h.get(CLAIM_HOST_TAG, '?')} pid {h.get(CLAIM_PID_TAG, '?')}"

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._beat, name="ddmlflow-claims", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        """Refresh every held claim's heartbeat (for waiters on other machines) until none is held."""
        c = MlflowClient()
        while True:
            time.sleep(self.beat_s)
            with self._lock:
                keys = list(self.held)
            for key in keys:
                with contextlib.suppress(Exception):
                    c.set_registered_model_tag(self.name(key), CLAIM_HEARTBEAT_TAG, f"{time.time():.0f}")


_CLAIMS: Claims | None = None


def claims() -> Claims:
    """This process's claims (one holder identity, one heartbeat thread)."""
    global _CLAIMS
    if _CLAIMS is None:
        _CLAIMS = Claims(stale_s=float(os.environ.get("DDMLFLOW_CLAIM_STALE_S", "90")))
    return _CLAIMS
