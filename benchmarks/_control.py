"""Start and drive the benchmark token server (``authserver.py``) in a separate process."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "ServerProcess"]

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"
_SCRIPT = Path(__file__).with_name("authserver.py")
_REPLY_TIMEOUT = 30.0


class ServerProcess:
    """One ``authserver.py`` child process; :meth:`start` gives it a fresh AuthServer."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(  # noqa: S603 - our own script, with this interpreter
            [sys.executable, str(_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()
        self.url = ""
        self.token_url = ""

    def call(self, cmd: str, **args: Any) -> Any:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self._proc.stdin.flush()
            reply: list[str] = []
            reader = threading.Thread(target=lambda: reply.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            reader.join(_REPLY_TIMEOUT)
            if not reply or not reply[0]:
                raise RuntimeError(f"the benchmark server did not answer {cmd!r} (exit code {self._proc.poll()})")
            return json.loads(reply[0])

    def start(
        self, *, ttl: float = 3600, rotation: str = "reuse-detection", refresh_delay: float = 0.0
    ) -> ServerProcess:
        reply = self.call(
            "start",
            ttl=ttl,
            rotation=rotation,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_delay=refresh_delay,
        )
        self.url, self.token_url = reply["url"], reply["token_url"]
        return self

    def issue(self) -> dict[str, Any]:
        return self.call("issue")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.call("stats")  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                self.call("quit")
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
