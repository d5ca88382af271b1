"""Run one refresh to completion: retry transient failures with bounded backoff inside a deadline.

Transient means the server may answer differently soon: connection errors, timeouts, 429 and 5xx
(:class:`RefreshError` with ``retryable=True``). Everything else ends the attempt at once. A refresh
whose response never arrived may already have rotated the refresh token on the server; retrying it
promptly is what servers' reuse grace periods are for (without one, the retry ends the session).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import requests

from ._redact import without_request
from .exceptions import RefreshError
from .tokens import Token

__all__ = ["MAX_ATTEMPTS", "TRANSIENT_ERRORS", "refresh_with_retries"]

log: logging.Logger = logging.getLogger(__name__)

#: Attempts at most for one refresh, the first included.
MAX_ATTEMPTS = 4
#: First backoff delay in seconds; it doubles each retry, up to BACKOFF_CAP.
BACKOFF_BASE = 0.2
BACKOFF_CAP = 4.0
#: Seconds an attempt needs at least (a quarter of the timeout, if less): no retry on scraps of time.
MIN_ATTEMPT_TIME = 0.25

Attempt = Callable[[Token | None, float], Token]

# Errors of the refresh request that may go away by themselves. Any other error (a bad URL, a
# storage failure, a bug in a custom refresher) is permanent and raised at once.
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def refresh_with_retries(
    attempt: Attempt,
    token: Token | None,
    *,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Token:
    """Call ``attempt(token, seconds_left)`` until it returns, fails for good, or time runs out.

    Raises:
        SessionExpiredError: at once, never retried.
        RefreshError: a permanent failure, or the last transient one (``retryable=True``).
        Exception: anything else ``attempt`` raises, at once.
    """
    deadline = monotonic() + timeout
    for number in range(1, MAX_ATTEMPTS + 1):
        try:
            return attempt(token, max(deadline - monotonic(), 0.001))
        except RefreshError as exc:
            if not exc.retryable:
                raise
            last = exc
        except TRANSIENT_ERRORS as exc:
            # Raised by the refresh request itself (or a custom refresher): the network failed.
            last = RefreshError(
                f"token endpoint unreachable: {type(exc).__name__}",
                error="timeout" if isinstance(exc, requests.Timeout) else "connection_error",
                retryable=True,
            )
            last.__cause__ = without_request(exc)
        delay = last.retry_after
        if delay is None:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (number - 1)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
        left = deadline - monotonic()
        if number == MAX_ATTEMPTS or left - delay < min(MIN_ATTEMPT_TIME, timeout / 4):
            break  # the last error stands: a retry with no time to be answered would end in "timeout"
        log.debug("refresh attempt %d failed (%s); retrying in %.2fs", number, last.error, delay)
        sleep(delay)
    raise last
