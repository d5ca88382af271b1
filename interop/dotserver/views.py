"""The protected API and the server-side counters the interop tests read."""

import json
import threading
import time
from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider.decorators import protected_resource

_lock = threading.Condition()
_counts = {"refresh_calls": 0, "refresh_ok": 0, "refresh_failed": 0, "api_calls": 0, "api_401": 0, "waiting": 0}
# Device-flow polls (RFC 8628 §3.4) at the token endpoint, and how they were answered.
_counts.update(device_polls=0, device_pending=0, device_denied=0, device_ok=0)
_tokens_seen: set[str] = set()
_DEVICE_POLL = b"grant_type=" + quote("urn:ietf:params:oauth:grant-type:device_code", safe="").encode()
_DEVICE_OUTCOMES = {None: "device_ok", "authorization_pending": "device_pending", "access_denied": "device_denied"}


class CountingMiddleware:
    """Counts refresh_token grants (every call, and how it ended), device-flow polls and API calls, in this process."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # request.body (not .POST) so that the token view can still read the body itself.
        is_refresh = request.path == "/o/token/" and b"grant_type=refresh_token" in request.body
        is_device_poll = request.path == "/o/token/" and _DEVICE_POLL in request.body
        response = self.get_response(request)
        with _lock:
            if is_refresh:
                _counts["refresh_calls"] += 1
                _counts["refresh_ok" if response.status_code == 200 else "refresh_failed"] += 1
                _lock.notify_all()
            elif is_device_poll:
                _counts["device_polls"] += 1
                try:
                    error = json.loads(response.content).get("error") if response.status_code != 200 else None
                except ValueError:  # not JSON (a 500 page): counted as a poll only
                    error = f"http_{response.status_code}"
                if error in _DEVICE_OUTCOMES:
                    _counts[_DEVICE_OUTCOMES[error]] += 1
            elif request.path == "/api/me":
                _counts["api_calls"] += 1
                if response.status_code == 401:
                    _counts["api_401"] += 1
        return response


# advertise_metadata=True: an RFC 6750 401 + WWW-Authenticate challenge for a missing or invalid
# token (the default is a bare 403, which a client cannot tell from "not allowed").
@protected_resource(advertise_metadata=True)
def _me(request: HttpRequest) -> JsonResponse:
    auth = request.headers.get("Authorization", "")
    with _lock:
        _tokens_seen.add(auth)
    owner = request.resource_owner  # None for a client credentials token in some DOT versions
    return JsonResponse({"user": getattr(owner, "username", None)})


def me(request: HttpRequest) -> HttpResponse:
    """GET /api/me[?sleep=S][&until_refreshes=N]: waits first, *then* checks the token.

    ``until_refreshes=N`` holds the request (at most 10 s) until the server has answered N
    refresh calls, so a request can be made to carry a token that is revoked while it is in flight.
    """
    until = request.GET.get("until_refreshes")
    if until is not None:
        with _lock:
            _counts["waiting"] += 1
            _lock.notify_all()
            _lock.wait_for(lambda: _counts["refresh_calls"] >= int(until), timeout=10)
            _counts["waiting"] -= 1
    time.sleep(float(request.GET.get("sleep", "0")))
    return _me(request)


def stats(request: HttpRequest) -> JsonResponse:
    if request.GET.get("reset"):
        with _lock:
            for k in _counts:
                if k != "waiting":
                    _counts[k] = 0
            _tokens_seen.clear()
    with _lock:
        return JsonResponse({**_counts, "distinct_tokens": len(_tokens_seen)})
