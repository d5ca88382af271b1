"""The other process of a process cell (run by ``processes.py``, never imported by pytest).

::

    python tests/faults/worker.py --storage file --path P --token-url URL --api URL \\
        --step "lease read" --fault sigkill --state DIR [--refresh-timeout S] [--lease-cap S]

One adapter over the storage (``file``: FileStorage; ``keyring``: KeyringStorage over the kit's
FileKeyring at ``--path`` with its lock files in ``--lock-dir``; ``redis``: RedisStorage at
``--url``/``--key``; ``redis-cluster``: over a RedisCluster that starts from the node at ``--url``;
``redis-sentinel``: over the master client of the Sentinel at ``--url`` (``HOST:PORT``) for
``--service``), wrapped by ``inject.FaultStorage`` so that the fault lands at ``--step``:

``sigkill``, ``sigstop``
    The request runs in the main thread. At the step (after its call) the process writes
    ``DIR/at`` and waits for ``DIR/go``: the test kills or stops it there. A process that goes
    on sends two more requests, closes the adapter and prints one JSON line: ``first`` and
    ``recovery`` outcomes, the ``steps`` it reached.
``exit``
    The request runs in a daemon thread. At the step, the main thread returns (the interpreter
    exits) and the step's thread goes on once the main thread is gone. For ``request sent``
    (the token endpoint holds the request) the main thread returns when ``DIR/exit`` appears,
    and ``DIR/exiting`` says that the interpreter is exiting.

At ``save retried`` the first save fails (raised here): the step is the second save.

``python tests/faults/worker.py --serve`` is a zygote: it imports all of the above once, then for
each line on its standard input (a JSON object: ``argv``, and the paths ``out``, ``err`` and
``status``) forks a worker with those arguments, whose standard output and error go to ``out``
and ``err``, prints its PID, and, when it has ended, writes its exit status (``-9``: SIGKILL) to
``status``. A worker then starts in milliseconds rather than in half a second. The zygote is
single-threaded, so forking it is safe; it ends at the end of its input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from inject import FaultStorage, Injector, Spec, outcome_of  # this directory is sys.path[0]

from requests_tokenrefresh import (
    FileStorage,
    KeyringStorage,
    RedisStorage,
    TokenRefreshAdapter,
    TokenStorage,
    TokenStorageError,
)
from requests_tokenrefresh.testing import FileKeyring

SERVICE, USER = "fault-api", "alice"  # as backends.py
#: Seconds any wait here lasts at most, so that a broken test leaves no process behind.
BOUND = 60.0


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"worker: timed out waiting for {what}")
        time.sleep(0.005)


def make_storage(args: argparse.Namespace) -> TokenStorage:
    if args.storage == "file":
        return FileStorage(args.path)
    if args.storage == "keyring":
        return KeyringStorage(SERVICE, USER, backend=FileKeyring(args.path), lock_dir=args.lock_dir)
    if args.storage == "redis":
        return RedisStorage(args.url, key=args.key, lease_margin=args.lease_margin)
    import redis.backoff
    import redis.retry

    retry = redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=0.5, base=0.05), retries=1)  # as backends.py
    if args.storage == "redis-cluster":
        import redis.cluster

        client = redis.cluster.RedisCluster.from_url(args.url, socket_timeout=5, socket_connect_timeout=5, retry=retry)
    else:
        import redis.sentinel

        host, _, port = args.url.rpartition(":")
        sentinel = redis.sentinel.Sentinel([(host, int(port))], sentinel_kwargs={"socket_timeout": 1.0})
        client = sentinel.master_for(args.service, socket_timeout=1.0, socket_connect_timeout=1.0, retry=retry)
    return RedisStorage(client, key=args.key, lease_margin=args.lease_margin)


class FirstSaveFails:
    """The ``save retried`` precondition: the first save raises instead of saving."""

    def __enter__(self) -> None:
        raise TokenStorageError("injected: the first save fails")

    def __exit__(self, *exc: object) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--storage", choices=["file", "keyring", "redis", "redis-cluster", "redis-sentinel"], required=True
    )
    parser.add_argument("--path", default="")
    parser.add_argument("--lock-dir", default="")
    parser.add_argument("--url", default="", help="redis: its URL; redis-cluster: a node's; redis-sentinel: HOST:PORT")
    parser.add_argument("--service", default="", help="redis-sentinel: the master's name")
    parser.add_argument("--key", default="")
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--step", required=True)
    parser.add_argument("--fault", choices=["exit", "sigkill", "sigstop"], required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--refresh-timeout", type=float, default=1.0)
    parser.add_argument("--lease-cap", type=float, default=None)
    parser.add_argument("--lease-margin", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="worker %(threadName)s %(levelname)s %(name)s: %(message)s"
    )
    random.seed(f"{args.step}-{args.fault}-{args.storage}")  # the retry jitter: a failing cell replays
    state = Path(args.state)
    leaving = threading.Event()

    def park() -> None:  # sigkill, sigstop: the test acts on this process here
        (state / "at").touch()
        wait_for((state / "go").exists, "the go file")

    def leave() -> None:  # exit: the main thread returns; this thread goes on as the interpreter exits
        (state / "at").touch()
        leaving.set()
        wait_for(lambda: not threading.main_thread().is_alive(), "the main thread to end")

    injector = Injector()
    if args.step == "save retried":
        injector.specs["save attempted"] = Spec(around=FirstSaveFails)
    if args.step != "request sent":
        injector.specs[args.step] = Spec(after=leave if args.fault == "exit" else park)
    storage = FaultStorage(make_storage(args), injector, lease_cap=args.lease_cap)
    adapter = TokenRefreshAdapter(
        storage,
        token_url=args.token_url,
        refresh_timeout=args.refresh_timeout,
        on_refresh=lambda token: injector.at("publish", lambda: None),
    )
    session = requests.Session()
    session.mount(args.api.rsplit("/", 1)[0] + "/", adapter)

    def send() -> str:
        try:
            return outcome_of(session.get(args.api, timeout=BOUND))
        except requests.RequestException as exc:
            return outcome_of(exc)

    if args.fault == "exit":
        threading.Thread(target=send, name="caller", daemon=True).start()
        if args.step == "request sent":

            def watch() -> None:
                wait_for(lambda: not threading.main_thread().is_alive(), "the main thread to end")
                (state / "exiting").touch()

            threading.Thread(target=watch, name="watcher", daemon=True).start()
            wait_for((state / "exit").exists, "the exit file")
        elif not leaving.wait(BOUND):
            raise SystemExit("worker: the step was never reached")
        return 0  # the interpreter exits with the caller inside the adapter

    first = send()
    recovery = [send() for _ in range(2)]
    adapter.close()
    session.close()
    print(json.dumps({"first": first, "recovery": recovery, "steps": injector.reached}), flush=True)
    return 0


def serve() -> None:
    """The zygote (see the module docstring); returns in each forked worker, with its arguments run."""
    import filelock  # noqa: F401  # everything a worker imports, imported once here
    import keyring.backends.fail  # noqa: F401
    import redis.backoff
    import redis.cluster
    import redis.retry
    import redis.sentinel  # noqa: F401

    children: dict[int, str] = {}  # pid -> its status file

    def reap(signum: int, frame: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            path = children.pop(pid, None)
            if path is not None:
                Path(path + ".tmp").write_text(str(os.waitstatus_to_exitcode(status)))
                os.replace(path + ".tmp", path)

    signal.signal(signal.SIGCHLD, reap)
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # reaped only once registered
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            for fd, path, mode in (
                (0, os.devnull, os.O_RDONLY),
                (1, job["out"], os.O_WRONLY | os.O_CREAT),
                (2, job["err"], os.O_WRONLY | os.O_CREAT),
            ):
                target = os.open(path, mode, 0o600)
                os.dup2(target, fd)
                os.close(target)
            sys.exit(main(job["argv"]))  # the worker's own interpreter exit, atexit and all
        children[pid] = job["status"]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        print(pid, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
        sys.exit(0)
    sys.exit(main())
