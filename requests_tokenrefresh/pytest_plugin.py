"""The testing kit's pytest plugin under its 0.2 path: ``pytest -p requests_tokenrefresh.pytest_plugin``.

The plugin is :mod:`requests_tokenrefresh.testing.pytest_plugin`; this module serves the same
fixtures, so both ``-p`` names work. It goes in a later release.
"""

from __future__ import annotations

from .testing.pytest_plugin import auth_server, fake_clock, token_keyring, token_session

__all__ = ["auth_server", "fake_clock", "token_keyring", "token_session"]
