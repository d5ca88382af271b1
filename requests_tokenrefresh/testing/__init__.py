"""Fakes for testing code that uses requests-tokenrefresh: an OAuth server, a keyring, a clock.

This module owns the testing kit's public names:

* :class:`AuthServer`: a real OAuth 2.0 authorization server and protected API on loopback, with
  modes for rotation, reuse detection, a reuse grace window, scripted failures (:class:`Canned`),
  held refreshes and revocations, and counters of what it saw;
* :class:`MemoryKeyring` and :func:`use_keyring`: a keyring backend in a dict, installed for a
  block and then replaced by the previous one, so that a test never reaches the machine's keyring;
  it can fail chosen calls, as a locked or broken platform keyring does;
* :class:`FileKeyring`: a keyring backend in a JSON file that several processes can share;
* :class:`FakeClock`: epoch seconds that move only when the test moves them, for ``clock=``.

It imports neither pytest nor anything outside the package's dependencies: the demo, benchmarks
and ``unittest`` suites can use it. The pytest plugin :mod:`requests_tokenrefresh.pytest_plugin`
(``pytest -p requests_tokenrefresh.pytest_plugin``) serves these fakes as the fixtures
``auth_server``, ``token_keyring``, ``fake_clock`` and ``token_session``.

.. versionadded:: 0.2
"""

from __future__ import annotations

from .authserver import AUTHORIZE_MODES, DEVICE_MODES, ROTATION_MODES, AuthServer, Canned
from .clock import FakeClock
from .filekeyring import FileKeyring
from .keyrings import MemoryKeyring, use_keyring

__all__ = [
    "AUTHORIZE_MODES",
    "DEVICE_MODES",
    "ROTATION_MODES",
    "AuthServer",
    "Canned",
    "FakeClock",
    "FileKeyring",
    "MemoryKeyring",
    "use_keyring",
]
