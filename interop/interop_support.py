"""What the interop tests share: a browser made of requests that submits forms, and stopping a server.

Each test module subclasses :class:`FormBrowser` with the forms of its server's pages. The tests
import this module as a top-level one: ``conftest.py`` puts this directory on sys.path under
pytest, as Python does when test_oidc_provider.py runs as a script (its multi-process workers).
"""

from __future__ import annotations

import html.parser
import subprocess
import threading
from typing import Any
from urllib.parse import urljoin

import requests

__all__ = ["FormBrowser", "Forms", "stop"]


def stop(proc: subprocess.Popen[Any]) -> None:
    """End a server process: terminate it, or kill it if it is still running 10 s later."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Forms(html.parser.HTMLParser):
    """The forms of a page: action, method and each input's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(), "inputs": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append(a)


class FormBrowser:
    """A browser made of requests: follows redirects one by one and submits the forms it meets.

    A login opens it in place of ``webbrowser.open`` (:meth:`open`); it runs in a thread until a
    redirect leaves ``origin`` (to the login's loopback listener), whose page it keeps in
    ``final``. :meth:`join` waits for it and raises what went wrong there. A subclass fills in its
    server's forms (:meth:`_submit`).
    """

    #: How many pages it reads before it gives up.
    max_steps = 10

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.trail: list[str] = []  # what :meth:`_page` makes of each page seen, in order
        self.final: requests.Response | None = None
        self.errors: list[BaseException] = []
        self.thread: threading.Thread | None = None

    def open(self, url: str, *args: Any, **kwargs: Any) -> bool:
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()
        return True

    def _run(self, url: str) -> None:
        try:
            with requests.Session() as s:
                s.trust_env = False
                response = s.get(url, allow_redirects=False, timeout=10)
                for _ in range(self.max_steps):
                    self.trail.append(self._page(response.url))
                    if not response.is_redirect:
                        assert response.status_code == 200, response.text[:500]
                        response = self._submit(s, response)
                        continue
                    target = urljoin(response.url, response.headers["Location"])
                    if not target.startswith(self.origin):  # the login's listener
                        self.final = s.get(target, timeout=30)
                        return
                    response = s.get(target, allow_redirects=False, timeout=10)
                raise AssertionError(f"no redirect to the listener after {self.trail}")
        except BaseException as exc:
            self.errors.append(exc)

    def _page(self, url: str) -> str:
        """The trail's entry for the page at ``url``: its address without the query."""
        return url.split("?")[0]

    def _submit(self, s: requests.Session, page: requests.Response) -> requests.Response:
        """Fill in and submit the form on ``page``; the server's answer, not followed."""
        raise NotImplementedError

    def join(self) -> None:
        assert self.thread is not None, "the login never opened the browser"
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]
