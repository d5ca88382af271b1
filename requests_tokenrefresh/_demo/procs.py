"""The processes of ``demo --hosts``: a redis-server of the demo's own and the host processes.

Both run in sessions of their own, so Ctrl-C reaches the demo, which ends them by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["HOST_START_TIMEOUT", "REDIS_INSTALL_HELP", "redis_answers", "stop_process"]

#: Seconds a host process gets to start (Python, requests, redis-py) and a redis-server to answer.
HOST_START_TIMEOUT = 60.0
REDIS_INSTALL_HELP = (
    "demo --hosts needs Redis: give --redis URL, or install redis-server (Debian/Ubuntu: `apt-get install "
    "redis-server`; macOS: `brew install redis`) so that the demo can start one on 127.0.0.1"
)
# Runs one host; sys.path as the demo process has it, so the host runs the same package.
_HOST_CODE = "from requests_tokenrefresh._demo.hosts import host_main; host_main()"


class _HostsError(ValueError):
    """``demo --hosts`` cannot run: no redis-server, or a host process that did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """End ``process`` (one the caller started), by its PID: SIGTERM, then SIGKILL.

    The tests stop their redis-servers with it too.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class _LocalRedis:
    """A redis-server on 127.0.0.1 on a free port, without persistence, for one demo run."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _LocalRedis:
        executable = shutil.which("redis-server")
        if executable is None:
            raise _HostsError(REDIS_INSTALL_HELP)
        logfile = os.path.join(self.directory, "redis.log")
        for _ in range(3):  # another program may take the free port before the server binds it
            port = _free_port()
            command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
            command += ["--save", "", "--appendonly", "no", "--dir", self.directory, "--logfile", logfile]
            self.process = subprocess.Popen(  # noqa: S603 - redis-server from PATH, fixed arguments
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the server in order
            )
            if self._ready(port):
                self.url = f"redis://127.0.0.1:{port}/0"
                return self
            stop_process(self.process)
        raise _HostsError(f"the redis-server the demo started did not answer: {_last_line(logfile) or 'no log'}")

    def _ready(self, port: int) -> bool:
        assert self.process is not None
        return redis_answers(self.process, port, HOST_START_TIMEOUT)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            stop_process(self.process)


def redis_answers(process: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Whether the redis-server ``process`` answers PING on 127.0.0.1:``port`` within ``timeout`` seconds.

    The tests start their servers with it too (tests/redis_support.py, tests/redis_cluster_support.py).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


class _Host:
    """One host process and what it reported (its stdout is one JSON object a line)."""

    def __init__(self, number: int, process: subprocess.Popen[str], stderr_path: str) -> None:
        self.number = number
        self.process = process
        self.stderr_path = stderr_path
        self.ok = self.failed = 0
        self.result: dict[str, Any] | None = None
        self.ready = threading.Event()
        self.done = threading.Event()  # its stdout ended
        self.reader = threading.Thread(target=self._read, name=f"demo-host-{number}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("ready"):
                    self.ready.set()
                if "result" in message:
                    self.result = message["result"]
                self.ok, self.failed = int(message.get("ok", self.ok)), int(message.get("failed", self.failed))
        except (OSError, ValueError):  # the pipe was closed by stop()
            pass
        finally:
            self.done.set()

    def send(self, line: str) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except OSError:  # it has exited: its missing report says so
            pass

    def why_not(self) -> str:
        """Why it gave no result, in a few words."""
        status = self.process.poll()
        state = "is still running" if status is None else f"exited with status {status}"
        last = _last_line(self.stderr_path)
        return f"host {self.number} {state} without a report" + (f" ({last})" if last else "")


def _start_hosts(count: int, config: dict[str, Any], workdir: str) -> list[_Host]:
    """Start ``count`` host processes, each with its own cache, data and config directories and no keyring."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hosts = []
    for number in range(1, count + 1):
        directory = os.path.join(workdir, f"host-{number}")
        os.makedirs(directory)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_KEYRING", "REQUESTS_TOKENREFRESH"))}
        env.update(
            XDG_CACHE_HOME=os.path.join(directory, "cache"),  # the lock directory: none shared
            XDG_DATA_HOME=os.path.join(directory, "data"),
            XDG_CONFIG_HOME=os.path.join(directory, "config"),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",  # a keyring use would fail loudly
            PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        )
        stderr_path = os.path.join(directory, "stderr.txt")
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed code
                [sys.executable, "-c", _HOST_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=directory,
                env=env,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the demo, which ends the hosts by PID
            )
        host = _Host(number, process, stderr_path)
        hosts.append(host)
        host.send(json.dumps({**config, "number": number}))  # on stdin: a Redis password stays out of argv
    return hosts


def _stop_hosts(hosts: list[_Host]) -> None:
    """End every host process still running, by PID: SIGTERM to all, then SIGKILL to any left."""
    for host in hosts:
        if host.process.poll() is None:
            host.process.terminate()
    deadline = time.monotonic() + 5
    for host in hosts:
        try:
            host.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            host.process.kill()
            host.process.wait(5)
    for host in hosts:
        host.reader.join(5)
        for stream in (host.process.stdin, host.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _wait_ready(hosts: list[_Host]) -> None:
    deadline = time.monotonic() + HOST_START_TIMEOUT
    for host in hosts:
        while not host.ready.is_set():
            if host.done.is_set() or time.monotonic() > deadline:
                raise _HostsError(f"a host process did not start: {host.why_not()}")
            host.ready.wait(0.1)
