"""The fault matrix as data: the refresh protocol's steps, the faults, the storages, and the
outcome declared for every cell (or why the cell cannot occur).

``test_matrix.py`` runs every cell that can occur and checks that the outcome it observes is the
one declared here; ``docs/fault_matrix.py`` renders this table (or a run's observed outcomes) into
``docs/_fault_matrix.inc``, which ``docs/reliability.rst`` includes. Standard library only: the
docs script loads this file by its path.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "FAULTS",
    "NA",
    "OUTCOMES",
    "STEPS",
    "STORAGES",
    "Fault",
    "Step",
    "cell_id",
    "cells",
    "expected",
]


@dataclasses.dataclass(frozen=True)
class Step:
    key: str  # in test ids
    name: str  # as the injector names it
    call: str  # the coordinator's call at this step


@dataclasses.dataclass(frozen=True)
class Fault:
    key: str
    name: str
    how: str  # how the harness injects it


#: In the order the coordinator goes through them. ``publish`` (``on_refresh``) comes before
#: ``lease released``: the coordinator hands the new token out inside the lease.
STEPS = (
    Step("first_load", "first load", "``storage.load()`` outside the lease, at the first request"),
    Step("lease_taken", "lease taken", "``lease.__enter__()``"),
    Step("lease_read", "lease read", "``lease.load()`` inside the lease"),
    Step("lease_checked", "lease checked", "``lease.check(seconds)``, right before the refresh request"),
    Step("request_sent", "request sent", "the token endpoint holds the request and has not answered"),
    Step("answer_received", "answer received", "the grant returned; nothing saved yet"),
    Step("save_attempted", "save attempted", "``lease.save(new)``, first call"),
    Step("save_retried", "save retried", "``lease.save(new)``, second call (the first one failed)"),
    Step("publish", "publish", "the new token is handed out: ``on_refresh``"),
    Step("lease_released", "lease released", "``lease.__exit__()``"),
)

#: ``redis``: one server; ``redis-cluster``: three masters; ``redis-sentinel``: a master, its
#: replica and a Sentinel.
STORAGES = ("memory", "keyring", "file", "redis", "redis-cluster", "redis-sentinel")

FAULTS = (
    Fault(
        "error_once",
        "storage error once",
        "the step's call fails once: keyring, the backend raises ``KeyringLocked``; file, the token "
        "directory is a plain file for that call (``ENOTDIR``); Redis, an ACL denies every command for "
        "that call (``NOPERM``; Cluster: on the node that holds the key; Sentinel: on the master)",
    ),
    Fault(
        "unreachable",
        "storage unreachable 1.5 s",
        "from the step's call on, for 1.5 s: keyring, every backend call raises; file, the token "
        "directory is a plain file; Redis, the server is stopped, then started again with its "
        "append-only file; Cluster, the node that holds the key restarts with its append-only file and "
        "refuses its slots (``CLUSTERDOWN``) for the 2 s a master that starts again waits; Sentinel, a "
        "failover: the master is SIGKILLed, and 1.5 s later the Sentinel is told to promote the "
        "replica (``SENTINEL FAILOVER``); clients find no master until it has",
    ),
    Fault(
        "restarted_empty",
        "storage restarted empty",
        "right before the step's call: keyring, the entry is deleted; file, the file is deleted; "
        "Redis, the server restarts without its data; Cluster, the node that holds the key loses "
        "what such a restart loses (``FLUSHALL``, ``SCRIPT FLUSH``; its 2 s of ``CLUSTERDOWN`` "
        "after a restart are the unreachable cells'); Sentinel, a failover that loses the record: "
        "the master is SIGKILLed and the replica, whose link was cut before the record was first "
        "written, is promoted (where the token endpoint holds the request, 1 s later)",
    ),
    Fault(
        "keyboard_interrupt",
        "KeyboardInterrupt",
        "SIGINT to the caller's (main) thread while it waits in the adapter, after the step's call",
    ),
    Fault(
        "system_exit",
        "SystemExit",
        "SIGTERM, whose handler raises ``SystemExit``, to the caller's (main) thread, after the step's call",
    ),
    Fault("close", "close()", "``adapter.close()`` from another thread, after the step's call"),
    Fault(
        "exit",
        "interpreter exit",
        "a process whose request runs in a daemon thread returns from its main thread after the step's call",
    ),
    Fault("endpoint_5xx", "token endpoint 5xx", "every token request of the refresh is answered 503"),
    Fault(
        "endpoint_never",
        "token endpoint never answers",
        "the token endpoint holds the request past ``refresh_timeout``, then drops it unprocessed",
    ),
    Fault(
        "sigkill",
        "SIGKILL",
        "a process is killed after the step's call; the test process goes on refreshing the same record",
    ),
    Fault(
        "sigstop",
        "SIGSTOP",
        "a process is stopped after the step's call, for longer than its Redis lease (1 s for a "
        "file lock, which never runs out), while the test process goes on; then continued",
    ),
)

#: Outcome codes, as the table shows them, and what each means (what the test checks).
OUTCOMES = {
    "ok": "the request succeeds and its new token is stored before the request returns",
    "ok, saved later": "the request succeeds; the store could not take the new token in time, so it "
    "is kept in memory and stored by a later request or ``close()``",
    "ok, left empty": "the request succeeds; the store stays empty, which for this storage is a "
    "sign-out that takes effect at the next refresh",
    "retry": "the request raises ``RefreshError(retryable=True)`` or ``TokenStorageError``; the next request succeeds",
    "interrupt": "the interrupt is raised once the load or refresh under way has stored its outcome",
    "no token": "``SessionExpiredError`` (``no_token``): the store is empty and this process holds no "
    "token; for file and keyring an empty store is a sign-out, for Redis data lost before first use",
    "revoked": "a documented residual window: a refresh token that reached the server is presented "
    "again and the server revokes the family",
}

#: Why a cell cannot occur.
NA = {
    "memory-store": "a MemoryStorage cannot fail, nor restart without its process",
    "memory-process": "a MemoryStorage is not shared: it ends with its process",
    "memory-save": "a MemoryStorage save never fails, so it is never retried",
    "endpoint": "only the refresh request meets the token endpoint",
    "no-call": "no storage call at this step",
    "file-lock": "an OS file lock asks nothing of the store here (check) or cannot fail (release)",
    "nothing-held": "the process holds nothing shared yet: the same as a slow or absent process",
}

_STORE_FAULTS = ("error_once", "unreachable", "restarted_empty")
_PROCESS_FAULTS = ("exit", "sigkill", "sigstop")
_SAVES = ("request_sent", "answer_received", "save_attempted", "save_retried")
#: Stores that take a while to serve again after losing their data: a Sentinel failover.
_SLOW_RESTART = ("redis-sentinel",)


def _na(step: str, fault: str, storage: str) -> str | None:
    """The key of :data:`NA` for a cell that cannot occur, or None."""
    if fault in ("endpoint_5xx", "endpoint_never"):
        return None if step == "request_sent" else "endpoint"
    if storage == "memory":
        if fault in _STORE_FAULTS:
            return "memory-store"
        if fault in _PROCESS_FAULTS:
            return "memory-process"
        if step == "save_retried":
            return "memory-save"
    if fault == "error_once":
        if step in ("request_sent", "answer_received", "publish"):
            return "no-call"
        if step in ("lease_checked", "lease_released") and storage in ("keyring", "file"):
            return "file-lock"
    if fault in ("sigkill", "sigstop") and step == "first_load":
        return "nothing-held"
    return None


def _outcome(step: str, fault: str, storage: str) -> str:
    redis = storage.startswith("redis")
    if fault in ("keyboard_interrupt", "system_exit"):
        return "interrupt"
    if fault in ("close", "exit"):
        return "ok"
    if fault in ("endpoint_5xx", "endpoint_never"):
        return "retry"
    if fault == "error_once":
        if step == "first_load":
            return "ok"  # a failed first read is read again inside the lease
        if step == "save_retried":
            return "ok, saved later"  # two tries fit in refresh_timeout (1 s): the third is later
        return "ok" if step in ("save_attempted", "lease_released") else "retry"
    if fault == "unreachable":
        if step in ("first_load", "lease_taken", "lease_read"):
            return "retry"
        if step == "lease_checked":
            return "retry" if redis else "ok, saved later"
        return "ok, saved later" if step in _SAVES else "ok"
    if fault == "restarted_empty":
        if step == "first_load":
            return "no token"
        if step == "lease_taken":
            return "ok" if redis else "no token"  # Redis knows it lost writes: the token is restored
        if step in ("lease_read", "lease_checked"):
            # Redis: restored, but the restart took the lease too: nothing is sent without it
            return "retry" if redis else ("no token" if step == "lease_read" else "ok")
        if step in _SAVES:
            # Redis: the save finds a lower version, lost writes, and writes the token back at once;
            # a failover still under way when the answer arrives takes it later.
            return "ok, saved later" if storage in _SLOW_RESTART and step == "request_sent" else "ok"
        return "ok, saved later" if redis else "ok, left empty"
    if fault == "sigkill":
        return "revoked" if step in ("request_sent", "answer_received") else "ok"
    if fault == "sigstop":
        if redis and step in ("lease_checked", "request_sent", "answer_received"):
            return "revoked"
        return "ok"
    raise ValueError(f"no outcome declared for {step} / {fault} / {storage}")


def expected(step: str, fault: str, storage: str) -> str:
    """The declared outcome of a cell: a key of :data:`OUTCOMES`, or ``"n/a: <key of NA>"``."""
    reason = _na(step, fault, storage)
    return f"n/a: {reason}" if reason else _outcome(step, fault, storage)


def cell_id(step: str, fault: str, storage: str) -> str:
    return f"{step}-{fault}-{storage}"


def cells() -> list[tuple[str, str, str]]:
    """Every (step, fault, storage), in table order: by fault, then step, then storage."""
    return [(s.key, f.key, storage) for f in FAULTS for s in STEPS for storage in STORAGES]
