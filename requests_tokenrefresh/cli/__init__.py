"""The ``requests-tokenrefresh`` command: log in and out, inspect, import, refresh, rekey, and the live demo.

:func:`main` runs it (the console script and ``python -m requests_tokenrefresh``); the commands
live in one module each: ``login`` (login, logout), ``records`` (status, import, clear),
``refresh``, ``rekey``, ``store`` (where a command reads and writes the record), ``encryption``
(``--encrypted``: the record in an EncryptedStorage), ``format`` (what it prints).
"""

from __future__ import annotations

from .main import CLIENT_SECRET_ENV, DEMO_SERVICE, DEMO_USERNAME, REDIS_URL_ENV, build_parser, describe, main

__all__ = ["CLIENT_SECRET_ENV", "DEMO_SERVICE", "DEMO_USERNAME", "REDIS_URL_ENV", "build_parser", "describe", "main"]
