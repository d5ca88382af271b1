"""docs/login.rst names only arguments that exist.

Its runnable examples run under ``sphinx -b doctest``; its ``code-block`` examples (a browser
login, a service account) and the arguments its prose names (``port=``, ``grant_type=`` ...) do
not. Here every call in an example is bound to the real signature of what it calls, and every
``name=`` in the prose must be a parameter of a login function or of the adapter: a misspelt
keyword is a TypeError for whoever copies it (``**kwargs`` of the adapter would take it, and
HTTPAdapter refuse it).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

import requests_tokenrefresh
from requests_tokenrefresh import login

DOC = Path(__file__).resolve().parents[2] / "docs" / "login.rst"
# What the prose's ``name=`` may be an argument of.
DOCUMENTED = (
    login.discover,
    login.login_browser,
    login.login_device,
    login.logout,
    login.revoke_token,
    requests_tokenrefresh.TokenRefreshAdapter,
)


def _examples(text: str) -> list[str]:
    """The Python of every ``code-block:: python``, ``testsetup`` and ``doctest`` directive."""
    blocks: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"\.\. (code-block:: python|testsetup::|doctest::)", line):
            continue
        body: list[str] = []
        for following in lines[i + 1 :]:
            if following.strip() and not following.startswith(" "):
                break
            body.append(following)
        code = textwrap.dedent("\n".join(body))
        if line.startswith(".. doctest::"):
            code = "\n".join(s[4:] for s in code.splitlines() if s.startswith((">>> ", "... ")))
        blocks.append(code)
    return blocks


def _calls(code: str, names: dict[str, Any]) -> list[tuple[str, Any, ast.Call]]:
    """The calls in ``code`` to package objects, with what each one calls (aliases followed)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("requests_tokenrefresh"):
            module = __import__(node.module, fromlist=["*"])
            for alias in node.names:
                names[alias.asname or alias.name] = [getattr(module, alias.name)]
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.IfExp):
            # login = login_device if should_use_device_flow() else login_browser
            choices = [v.id for v in (node.value.body, node.value.orelse) if isinstance(v, ast.Name)]
            if all(c in names for c in choices):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        names[target.id] = [f for c in choices for f in names[c]]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in names:
            found += [(func.id, f, node) for f in names[func.id]]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in names:
            found += [
                (f"{func.value.id}.{func.attr}", getattr(owner, func.attr), node)
                for owner in names[func.value.id]
                if hasattr(owner, func.attr)
            ]
    return found


def test_every_call_in_the_examples_fits_its_signature() -> None:
    names: dict[str, Any] = {}
    checked = []
    for code in _examples(DOC.read_text()):
        for name, target, call in _calls(code, names):
            if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
                continue
            signature = inspect.signature(target)
            try:
                signature.bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
            except TypeError as exc:
                pytest.fail(f"docs/login.rst calls {name}({ast.unparse(call)[len(name) + 1 :]}: {exc}")
            var_keyword = [p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
            unknown = [k.arg for k in call.keywords if k.arg and k.arg not in signature.parameters]
            assert not unknown, f"docs/login.rst passes {unknown} to {name}, taken only by **{var_keyword[0]}"
            checked.append(target.__name__)
    for expected in ("discover", "login_browser", "login_device", "logout", "TokenRefreshAdapter"):
        assert expected in checked, f"no example of docs/login.rst calls {expected}"


def test_every_argument_the_prose_names_exists() -> None:
    text = DOC.read_text()
    parameters = {name for f in DOCUMENTED for name in inspect.signature(f).parameters}
    # ``port=``, ``redirect_host="localhost"``; not a redirect's query (``error=access_denied``).
    named = re.findall(r"``(\w+)=(?:|[\"'\d][^`]*|True|False|None)``", text)
    assert named, "the prose names no argument"
    unknown = sorted(set(named) - parameters)
    assert not unknown, f"docs/login.rst names arguments that do not exist: {unknown}"
