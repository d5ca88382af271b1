"""Puts this directory on sys.path, so that the test modules import interop_support.py as a top-level module.

tox runs pytest with ``--import-mode=importlib``, which adds no test directory to sys.path; and
this directory has no ``__init__.py`` (a relative import would fail where test_oidc_provider.py
runs as a script, in its multi-process test's workers: there Python puts the directory first).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
