"""Sphinx configuration for the requests-tokenrefresh documentation.

Build with warnings as errors, from the repository root::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m sphinx -W -b doctest docs docs/_build/doctest

autodoc imports ``requests_tokenrefresh``; install it first (``pip install -e .``). ``python -m``
puts the current directory first on ``sys.path``, so run from the repository root it documents
the checkout; ``tox -e docs`` runs ``sphinx-build``, which documents the installed wheel.
"""

from __future__ import annotations

import datetime

import requests_tokenrefresh

# -- Project -----------------------------------------------------------------------------------

project = "requests-tokenrefresh"
author = "the requests-tokenrefresh authors"
copyright = f"{datetime.date.today().year}, {author}"  # noqa: A001 - Sphinx's name
release = requests_tokenrefresh.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
]
# No sphinx.ext.intersphinx: the build must work offline (and with -W, a failed inventory
# fetch is an error). References to requests' and Python's objects render as plain text.

exclude_patterns = ["_build"]
nitpicky = False

# -- autodoc / napoleon --------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
autodoc_type_aliases = {"Refresher": "requests_tokenrefresh.adapters.Refresher"}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False

# -- doctest ------------------------------------------------------------------------------------

# The examples run offline. Each page includes _examples.inc, a hidden testsetup that installs
# an in-memory keyring, starts loopback AuthServers and routes the example.com hosts to them
# below HTTPAdapter.send (as the responses library does); any other host gets a ConnectionError.

# -- HTML ---------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"requests-tokenrefresh {release}"
html_static_path: list[str] = []
