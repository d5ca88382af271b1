"""The process cells: a process at a step is killed, stopped, or exits, while this one goes on.

The victim is ``worker.py`` (a real process with its own adapter over the shared storage); this
process plays the others ("survivors"): another process on the same file or keyring entry, or
another host on the same Redis. A Redis victim takes a 1.75-s lease (``--lease-cap``) and a
0.2-s ``lease_margin`` (its check asks for 1.2 s), so that a cell waits 1.75 s for a dead holder's lease rather
than ``refresh_timeout`` + 10 s; a file-lock victim has ``refresh_timeout`` 3 s, so that its 1-s stall
while the token endpoint answers does not run out its own deadline. The protocol is the same.

Steps are found, not timed: the victim writes ``at`` when it reaches the step (after its call),
and the token server's ``refresh_calls`` says when a request has reached it. Processes are
stopped, continued and killed by PID, only those this module started.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from requests_tokenrefresh import SessionExpiredError, TokenRefreshAdapter
from requests_tokenrefresh.testing import AuthServer

from .harness import (
    BOUND,
    RECOVERY_REQUESTS,
    REDIS_LEASE,
    REDIS_MARGIN,
    REFRESH_TIMEOUT,
    STEP_NAMES,
    HarnessError,
    Observation,
    Scene,
    captured_log,
    expired_seed,
    observe_server,
    read_state,
    threads_left,
    token_state,
    wait_until,
)
from .inject import outcome_of

__all__ = ["Victim", "Zygote", "run_process_cell"]

WORKER = Path(__file__).with_name("worker.py")
#: Seconds a stopped file-lock holder stays stopped (the lock never runs out: the others wait).
STALL = 1.0
#: A file-lock victim's refresh_timeout.
FILE_LOCK_TIMEOUT = 3.0


def is_stopped(pid: int) -> bool:
    """Whether the process is stopped (Linux: state T in /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


class Victim:
    """A worker forked by the :class:`Zygote`: its PID, and the files it leaves."""

    def __init__(self, pid: int, state: Path) -> None:
        self.pid = pid
        self.out, self.err, self.status = state / "out", state / "err", state / "status"

    def poll(self) -> int | None:
        """Its exit status once it has ended (``-9``: killed), else None."""
        return int(self.status.read_text()) if self.status.exists() else None

    def wait(self, bound: float = BOUND) -> int:
        wait_until(lambda: self.poll() is not None, f"process {self.pid} to end", bound)
        status = self.poll()
        assert status is not None
        return status

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)  # by PID: a process this module's zygote forked

    def output(self) -> tuple[str, str]:
        read = lambda path: path.read_text() if path.exists() else ""  # noqa: E731
        return read(self.out), read(self.err)


class Zygote:
    """``worker.py --serve``: forks workers that start in milliseconds (see worker.py)."""

    def __init__(self, directory: Path) -> None:
        env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
        env["XDG_CACHE_HOME"] = str(directory / "cache")
        self.log = (directory / "zygote.err").open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        if self._line() != "ready":
            raise HarnessError(f"the zygote did not start; see {directory / 'zygote.err'}")

    def _line(self) -> str:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], BOUND)
        if not readable:
            raise HarnessError(f"the zygote said nothing for {BOUND}s")
        return self.process.stdout.readline().strip()

    def fork(self, argv: list[str], state: Path) -> Victim:
        assert self.process.stdin is not None
        job = {"argv": argv, "out": str(state / "out"), "err": str(state / "err"), "status": str(state / "status")}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self._line()
        if not line.isdigit():
            raise HarnessError(f"the zygote answered {line!r}")
        return Victim(int(line), state)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the end of its input: it exits
        try:
            self.process.wait(BOUND)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(BOUND)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


def start_victim(zygote: Zygote, scene: Scene, srv: AuthServer, state: Path) -> Victim:
    argv = [*scene.backend.describe(), "--token-url", srv.token_url, "--api", srv.url + "/api/data"]
    argv += ["--step", STEP_NAMES[scene.step], "--fault", scene.fault, "--state", str(state)]
    if scene.backend.kind.startswith("redis"):
        argv += ["--refresh-timeout", str(REFRESH_TIMEOUT), "--lease-cap", str(REDIS_LEASE)]
        argv += ["--lease-margin", str(REDIS_MARGIN)]
    else:
        argv += ["--refresh-timeout", str(FILE_LOCK_TIMEOUT)]
    return zygote.fork(argv, state)


def run_process_cell(scene: Scene, directory: Path, zygote: Zygote) -> Observation:
    """Run one process cell (interpreter exit, SIGKILL, SIGSTOP) and observe it."""
    obs = Observation(scene.cell)
    random.seed(scene.cell)
    started = time.monotonic()
    before = set(threading.enumerate())
    expired_calls: list[SessionExpiredError] = []
    srv = AuthServer(ttl=3600, rotation="reuse-detection").start()
    state = directory / "victim"
    state.mkdir()
    victim: Victim | None = None
    session = requests.Session()
    survivor: TokenRefreshAdapter | None = None
    try:
        with captured_log(obs):
            seed = expired_seed(srv)
            scene.backend.seed(seed)
            request_sent = scene.step == "request_sent"
            if request_sent:
                srv.hold_refresh()
            victim = process = start_victim(zygote, scene, srv, state)
            if request_sent:
                wait_until(lambda: srv.refresh_calls >= 1 or process.poll() is not None, "the victim's request")
            else:
                wait_until(lambda: (state / "at").exists() or process.poll() is not None, "the victim at its step")
            if victim.poll() is not None:
                raise HarnessError(f"the victim ended (status {victim.poll()}) before its step")
            obs.fired = [STEP_NAMES[scene.step]]

            if scene.fault == "exit":
                if request_sent:
                    (state / "exit").touch()
                    wait_until(lambda: (state / "exiting").exists() or process.poll() is not None, "the exit")
                    srv.release_refresh()
                status = victim.wait()
                obs.first = "ok" if status == 0 else f"exit status {status}"
                obs.stored_after = obs.stored_final = read_state(scene.backend, srv)
                obs.memory_final = "n/a"
            else:
                survivor = TokenRefreshAdapter(
                    scene.backend.storage(),
                    token_url=srv.token_url,
                    refresh_timeout=REFRESH_TIMEOUT,
                    on_session_expired=expired_calls.append,
                )
                session.mount(srv.url + "/", survivor)
                api = srv.url + "/api/data"

                def send() -> str:
                    try:
                        return outcome_of(session.get(api, timeout=BOUND))
                    except requests.RequestException as exc:
                        return outcome_of(exc)

                if scene.fault == "sigkill":
                    victim.signal(signal.SIGKILL)
                    victim.wait()
                    srv.release_refresh()  # a request that reached the server is processed
                    obs.first = send()
                else:
                    victim.signal(signal.SIGSTOP)
                    wait_until(lambda: is_stopped(process.pid), "the victim to stop")
                    (state / "go").touch()
                    srv.release_refresh()
                    if scene.backend.kind.startswith("redis"):  # the others go on once its lease has run out
                        obs.first = send()
                        victim.signal(signal.SIGCONT)
                    else:  # a file lock does not run out: the others wait for the holder
                        timer = threading.Timer(STALL, victim.signal, (signal.SIGCONT,))
                        timer.name = "fault-continue"
                        timer.start()
                        obs.first = send()
                        timer.join(BOUND)
                    status = victim.wait()
                    out = victim.output()[0].strip()
                    if status != 0 or not out:
                        obs.others.append(f"victim exit status {status}")
                    else:
                        result = json.loads(out.splitlines()[-1])
                        obs.others += [result["first"], *result["recovery"]]
                obs.stored_after = read_state(scene.backend, srv)
                obs.recovery = [send() for _ in range(RECOVERY_REQUESTS)]
                obs.memory_final = token_state(survivor._coordinator.current(), srv)
                survivor.close()
                obs.stored_final = read_state(scene.backend, srv)
            obs.session_expired = len(expired_calls)
            observe_server(obs, srv, seed)
    except HarnessError as exc:
        obs.harness_errors.append(str(exc))
    finally:
        srv.release_refresh(drop=True)
        if victim is not None and victim.poll() is None:
            victim.signal(signal.SIGCONT)
            victim.signal(signal.SIGKILL)
            with contextlib.suppress(HarnessError):
                victim.wait()
        session.close()
        session.adapters.clear()  # closed once: a later close() would reach a storage closed below
        if survivor is not None:
            survivor.close()
        scene.backend.close()
        srv.stop()
        obs.threads_left = threads_left(before)
        obs.seconds = round(time.monotonic() - started, 2)
        stderr = victim.output()[1] if victim is not None else ""
        obs.log += [line for line in stderr.splitlines() if " INFO " not in line or "refresh" in line][-40:]
    return obs
