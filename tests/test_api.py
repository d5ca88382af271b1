"""The public surface: exported names, the exception tree, and what the installed distribution declares."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.resources
import inspect
import pickle
import pkgutil
import re
import typing
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from types import GenericAlias, ModuleType
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

import requests_tokenrefresh
import requests_tokenrefresh.testing
from requests_tokenrefresh import (
    EndpointError,
    InsecureTransportError,
    LoginError,
    MemoryStorage,
    RefreshError,
    RevocationError,
    SessionExpiredError,
    TokenRefreshAdapter,
    TokenRefreshError,
    TokenStorageError,
)

PUBLIC_NAMES = {
    "ClientAssertion",
    "DPoPKey",
    "EncryptedStorage",
    "EncryptionKeys",
    "EndpointError",
    "FileStorage",
    "InsecureTransportError",
    "KeyringStorage",
    "LeaseLostError",
    "LoginError",
    "MemoryStorage",
    "PrivateKeyJWT",
    "ProviderMetadata",
    "RedisStorage",
    "RefreshError",
    "RefreshLease",
    "Refresher",
    "RevocationError",
    "SessionExpiredError",
    "Token",
    "TokenRefreshAdapter",
    "TokenRefreshError",
    "TokenState",
    "TokenStorage",
    "TokenStorageError",
    "__version__",
    "discover",
    "login_browser",
    "login_device",
    "logout",
}


def package_modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.iter_modules(requests_tokenrefresh.__path__, "requests_tokenrefresh.")]
    return [requests_tokenrefresh, *(importlib.import_module(name) for name in sorted(names))]


def is_class(value: object) -> bool:
    """Whether ``value`` is a class; a parameterized generic (a type alias) is not.

    On Python 3.10 ``inspect.isclass(Callable[[Token], Token])`` is true: a ``types.GenericAlias``
    passed ``isinstance(alias, type)`` until 3.11.
    """
    return inspect.isclass(value) and not isinstance(value, GenericAlias)


def public_classes_and_functions(module: ModuleType, defined_in: str) -> set[str]:
    """Public names in ``module`` of classes and functions defined in ``defined_in`` or its submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (is_class(value) or inspect.isfunction(value))
        and value.__module__.startswith(defined_in)
    }


# --- exported names --------------------------------------------------------------------------


def test_all_is_exactly_the_public_names() -> None:
    assert sorted(requests_tokenrefresh.__all__) == sorted(PUBLIC_NAMES)


def test_star_import_gives_every_listed_name() -> None:
    namespace: dict[str, object] = {}
    exec("from requests_tokenrefresh import *", namespace)  # noqa: S102  # a constant string

    assert set(namespace) - {"__builtins__"} == set(requests_tokenrefresh.__all__)


def test_every_public_class_and_function_of_the_package_is_listed() -> None:
    defined = public_classes_and_functions(requests_tokenrefresh, "requests_tokenrefresh")

    assert defined <= set(requests_tokenrefresh.__all__)


@pytest.mark.parametrize("module", ["adapters", "exceptions", "storage", "tokens"])
def test_public_classes_of_public_modules_are_re_exported(module: str) -> None:
    mod = importlib.import_module(f"requests_tokenrefresh.{module}")
    exported = {name for name in mod.__all__ if is_class(getattr(mod, name))}

    assert exported
    assert exported <= set(requests_tokenrefresh.__all__)
    for name in exported:
        assert getattr(requests_tokenrefresh, name) is getattr(mod, name)


@pytest.mark.parametrize("module", package_modules(), ids=lambda m: m.__name__)
def test_every_module_has_a_complete_all(module: ModuleType) -> None:
    assert isinstance(module.__all__, list)
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name!r}"
    assert public_classes_and_functions(module, module.__name__) <= set(module.__all__)


def test_version() -> None:
    assert requests_tokenrefresh.__version__ == importlib.metadata.version("requests-tokenrefresh")


# --- type hints ------------------------------------------------------------------------------


def public_callables() -> list[Any]:
    """Every function, class and public method (``__init__`` too) that the package and its testing kit export."""
    found = []
    for module in (requests_tokenrefresh, requests_tokenrefresh.testing):
        for name in module.__all__:
            value = getattr(module, name)
            label = f"{module.__name__}.{name}"
            if inspect.isfunction(value):
                found.append(pytest.param(value, id=label))
            if not is_class(value):
                continue
            found.append(pytest.param(value, id=label))
            for attribute, member in vars(value).items():
                if attribute.startswith("_") and attribute != "__init__":
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                elif isinstance(member, cached_property):
                    member = member.func
                if inspect.isfunction(member):
                    marks = [REDIS_CLIENT_HINT] if member is requests_tokenrefresh.RedisStorage.__init__ else []
                    found.append(pytest.param(member, id=f"{label}.{attribute}", marks=marks))
    return found


REDIS_CLIENT_HINT = pytest.mark.xfail(
    strict=True,
    raises=NameError,
    reason="requests_tokenrefresh/storage/redis.py imports redis for type checkers only, and annotates "
    "RedisStorage's client_or_url with redis.Redis: once fixed there, this mark goes",
)


def resolves(cls: type) -> bool:
    try:
        typing.get_type_hints(cls)
    except NameError:
        return False
    return True


# requests 2.32+ annotates these with names it imports for type checkers only ('Response',
# '_PoolManager'), which typing.get_type_hints(cls) resolves too, for every base of cls.
UNRESOLVABLE_BASES = tuple(base for base in (requests.RequestException, HTTPAdapter) if not resolves(base))


@pytest.mark.parametrize("value", public_callables())
def test_type_hints_of_every_public_callable_resolve(value: Callable[..., Any]) -> None:
    if isinstance(value, type) and issubclass(value, UNRESOLVABLE_BASES):
        for cls in value.__mro__:  # those of the package's own classes in its MRO, then
            if cls.__module__.startswith("requests_tokenrefresh"):
                inspect.get_annotations(cls, eval_str=True)
    else:
        typing.get_type_hints(value)


@pytest.mark.parametrize(
    "scope",
    ["api offline_access", ["api", "offline_access"], ("api", "offline_access"), {"offline_access", "api"}, None],
    ids=["str", "list", "tuple", "set", "None"],
)
def test_the_scope_annotation_admits_every_scope_the_adapter_takes(scope: Any) -> None:
    adapter = TokenRefreshAdapter(MemoryStorage(), token_url="https://auth.example.com/token", scope=scope)
    hint = typing.get_type_hints(TokenRefreshAdapter.__init__)["scope"]
    kinds = [typing.get_origin(arg) or arg for arg in typing.get_args(hint)]

    assert any(isinstance(scope, kind) for kind in kinds), (scope, hint)
    assert adapter._settings.scope == (None if scope is None else "api offline_access")


# --- the documented options --------------------------------------------------------------------

QUICKSTART = Path(__file__).resolve().parent.parent / "docs" / "quickstart.rst"


def documented_options() -> dict[str, str]:
    """The Options table of docs/quickstart.rst: each option's name and its Default cell."""
    _, found, table = QUICKSTART.read_text(encoding="utf-8").partition("\nOptions\n-------\n")
    assert found, f"no Options section in {QUICKSTART}"
    rows = re.findall(r"^   \* - ``([*\w]+)``\n     -(.*)$", table.split("\n\n\n")[0], flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_the_quickstart_options_table_lists_every_keyword_with_its_default() -> None:
    documented = documented_options()
    parameters = inspect.signature(TokenRefreshAdapter.__init__).parameters

    assert list(documented) == [("**" + p.name if p.kind is p.VAR_KEYWORD else p.name) for p in parameters.values()][1:]
    for name, cell in documented.items():
        default = parameters[name.lstrip("*")].default
        if default is inspect.Parameter.empty:
            assert cell in ("(required)", ""), name
        elif callable(default):
            assert cell == f"``{default.__module__}.{default.__name__}``", name
        else:
            assert ast.literal_eval(cell.strip("`")) == default, name


# --- the exception tree ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (TokenRefreshError, requests.RequestException),
        (EndpointError, TokenRefreshError),
        (RefreshError, EndpointError),
        (LoginError, EndpointError),
        (RevocationError, EndpointError),
        (SessionExpiredError, RefreshError),
        (TokenStorageError, TokenRefreshError),
        (InsecureTransportError, TokenRefreshError),
        (InsecureTransportError, ValueError),
    ],
)
def test_exception_tree(cls: type[Exception], base: type[Exception]) -> None:
    assert issubclass(cls, base)


@pytest.mark.parametrize("cls", [LoginError, RevocationError])
def test_except_refresh_error_does_not_catch_a_failed_login_or_logout(cls: type[Exception]) -> None:
    assert not issubclass(cls, RefreshError)


def test_insecure_transport_error_is_caught_as_value_error() -> None:
    with pytest.raises(ValueError, match="plain http"):
        raise InsecureTransportError("a token would go over plain http")


def test_refresh_error_attributes() -> None:
    exc = RefreshError(
        "the token endpoint is down",
        error="temporarily_unavailable",
        error_description="maintenance",
        retryable=True,
        retry_after=30.0,
    )

    assert str(exc) == "the token endpoint is down"
    assert (exc.error, exc.error_description, exc.retryable, exc.retry_after) == (
        "temporarily_unavailable",
        "maintenance",
        True,
        30.0,
    )


def test_refresh_error_defaults() -> None:
    exc = RefreshError("failed")

    assert (exc.error, exc.error_description, exc.retryable, exc.retry_after) == ("refresh_failed", None, False, None)


def test_session_expired_error_is_never_retryable() -> None:
    exc = SessionExpiredError("log in again", retryable=True)

    assert exc.error == "invalid_grant"
    assert exc.retryable is False


@pytest.mark.parametrize(
    "exc",
    [
        RefreshError("busy", error="slow_down", error_description="wait", retryable=True, retry_after=5.0),
        SessionExpiredError("log in again", error_description="refresh token revoked"),
    ],
    ids=["RefreshError", "SessionExpiredError"],
)
def test_refresh_errors_survive_pickling_with_their_attributes(exc: RefreshError) -> None:
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301  # our own bytes

    assert type(copy) is type(exc)
    assert copy.args == exc.args
    assert (copy.error, copy.error_description, copy.retryable, copy.retry_after) == (
        exc.error,
        exc.error_description,
        exc.retryable,
        exc.retry_after,
    )


# --- the installed distribution --------------------------------------------------------------


def test_distribution_declares_its_dependencies() -> None:
    requires = importlib.metadata.requires("requests-tokenrefresh") or []
    names = {re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower() for requirement in requires}

    assert {"requests", "urllib3", "pyjwt", "keyring"} <= names


def test_py_typed_is_shipped() -> None:
    assert importlib.resources.files("requests_tokenrefresh").joinpath("py.typed").is_file()


def test_the_constants_documented_by_hand_have_their_values() -> None:
    # docs/api.rst spells out the adapter's constants (they live in a private module, where
    # autodata would look for their comments): their values there must be the code's.
    import re
    from pathlib import Path

    from requests_tokenrefresh import adapters

    text = (Path(__file__).parent.parent / "docs" / "api.rst").read_text(encoding="utf-8")
    documented = dict(re.findall(r"py:data:: requests_tokenrefresh\.adapters\.(\w+)\n   :value: (.+)\n", text))
    assert set(documented) == {
        "DEFAULT_LEEWAY",
        "DEFAULT_REFRESH_STATUS_CODES",
        "DEFAULT_REFRESH_TIMEOUT",
        "GRANT_TYPES",
    }
    for name, value in documented.items():
        assert value == repr(getattr(adapters, name)), name
