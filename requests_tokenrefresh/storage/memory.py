"""MemoryStorage: the token in this process only, for tests and short scripts."""

from __future__ import annotations

import threading
from typing import Any

from ..tokens import Token
from .base import TokenStorage

__all__ = ["MemoryStorage"]


class MemoryStorage(TokenStorage):
    """Keeps the token in this process only; it is gone when the process ends.

    Args:
        token: an initial token, if any.

    .. versionadded:: 0.1
    """

    _atomic_writes = True  # a reader never sees a write half done (the coordinator relies on it)

    def __init__(self, token: Token | None = None) -> None:
        self._lock = threading.Lock()
        self._token = token

    def load(self) -> Token | None:
        with self._lock:
            return self._token

    def save(self, token: Token) -> None:
        if not isinstance(token, Token):
            raise TypeError(f"save() takes a Token, not {type(token).__name__}")
        with self._lock:
            self._token = token

    def delete(self) -> None:
        with self._lock:
            self._token = None

    def __repr__(self) -> str:
        return f"MemoryStorage(<{'a token' if self._token else 'empty'}>)"

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a pickled copy starts empty: tokens are never pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
