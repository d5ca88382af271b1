"""The process cells: a process at a step is killed, stopped, or exits, while this one goes on.

The victim is ``worker.py`` (a real process with its own adapter over the shared storage); this
process plays the others ("survivors"): another process on the same file or keyring entry, or
another host on the same Redis. A Redis victim takes a 2-s lease (``--lease-cap``) and a
0.2-s ``lease_margin``, so that a cell waits 2 s for a dead holder's lease rather than
``refresh_timeout`` + 10 s; a file-lock victim has ``refresh_timeout`` 3 s, so that its 1-s stall
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

__all__ = ["run_process_cell"]

WORKER = Path(__file__).with_name("worker.py")
#: Seconds a stopped file-lock holder stays stopped (the lock never runs out: the others wait).
STALL = 1.0
#: A Redis victim's lease and margin (see the module docstring).
REDIS_LEASE, REDIS_MARGIN = 2.0, 0.2
#: A file-lock victim's refresh_timeout.
FILE_LOCK_TIMEOUT = 3.0


def is_stopped(pid: int) -> bool:
    """Whether the process is stopped (Linux: state T in /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


def start_victim(scene: Scene, srv: AuthServer, state: Path) -> subprocess.Popen[str]:
    command = [sys.executable, str(WORKER), *scene.backend.describe()]
    command += ["--token-url", srv.token_url, "--api", srv.url + "/api/data"]
    command += ["--step", STEP_NAMES[scene.step], "--fault", scene.fault, "--state", str(state)]
    if scene.backend.kind == "redis":
        command += ["--refresh-timeout", str(REFRESH_TIMEOUT), "--lease-cap", str(REDIS_LEASE)]
        command += ["--lease-margin", str(REDIS_MARGIN)]
    else:
        command += ["--refresh-timeout", str(FILE_LOCK_TIMEOUT)]
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_process_cell(scene: Scene, directory: Path) -> Observation:
    """Run one process cell (interpreter exit, SIGKILL, SIGSTOP) and observe it."""
    obs = Observation(scene.cell)
    random.seed(scene.cell)
    started = time.monotonic()
    before = set(threading.enumerate())
    expired_calls: list[SessionExpiredError] = []
    srv = AuthServer(ttl=3600, rotation="reuse-detection").start()
    state = directory / "victim"
    state.mkdir()
    victim: subprocess.Popen[str] | None = None
    session = requests.Session()
    survivor: TokenRefreshAdapter | None = None
    stderr = ""
    try:
        with captured_log(obs):
            seed = expired_seed(srv)
            scene.backend.seed(seed)
            request_sent = scene.step == "request_sent"
            if request_sent:
                srv.hold_refresh()
            victim = start_victim(scene, srv, state)
            process = victim
            if request_sent:
                wait_until(lambda: srv.refresh_calls >= 1 or process.poll() is not None, "the victim's request")
            else:
                wait_until(lambda: (state / "at").exists() or process.poll() is not None, "the victim at its step")
            if victim.poll() is not None:
                raise HarnessError(f"the victim ended before its step: {victim.communicate()[1][-3000:]}")
            obs.fired = [STEP_NAMES[scene.step]]

            if scene.fault == "exit":
                if request_sent:
                    (state / "exit").touch()
                    wait_until(lambda: (state / "exiting").exists() or process.poll() is not None, "the exit")
                    srv.release_refresh()
                try:
                    victim.wait(BOUND)
                    obs.first = "ok" if victim.returncode == 0 else f"exit status {victim.returncode}"
                except subprocess.TimeoutExpired:
                    obs.first = f"still running after {BOUND}s"
                stderr = victim.communicate(timeout=BOUND)[1]
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
                    victim.kill()  # SIGKILL, by PID
                    victim.wait(BOUND)
                    srv.release_refresh()  # a request that reached the server is processed
                    obs.first = send()
                else:
                    os.kill(victim.pid, signal.SIGSTOP)
                    wait_until(lambda: is_stopped(process.pid), "the victim to stop")
                    (state / "go").touch()
                    srv.release_refresh()
                    if scene.backend.kind == "redis":  # the others go on once its lease has run out
                        obs.first = send()
                        os.kill(victim.pid, signal.SIGCONT)
                    else:  # a file lock does not run out: the others wait for the holder
                        timer = threading.Timer(STALL, os.kill, (victim.pid, signal.SIGCONT))
                        timer.name = "fault-continue"
                        timer.start()
                        obs.first = send()
                        timer.join(BOUND)
                    out, stderr = victim.communicate(timeout=BOUND)
                    if victim.returncode != 0 or not out.strip():
                        obs.others.append(f"victim exit status {victim.returncode}")
                    else:
                        result = json.loads(out.strip().splitlines()[-1])
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
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.pid, signal.SIGCONT)
            victim.kill()
        if victim is not None:
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                stderr = stderr or victim.communicate(timeout=BOUND)[1]
        session.close()
        if survivor is not None:
            survivor.close()
        scene.backend.close()
        srv.stop()
        obs.threads_left = threads_left(before)
        obs.seconds = round(time.monotonic() - started, 2)
        obs.log += [line for line in stderr.splitlines() if " INFO " not in line or "refresh" in line][-40:]
    return obs
