"""Every cell of the fault matrix (``matrix.py``) that can occur, one test each:
``test_cell[<step>-<fault>-<storage>]``; and the published table is the declared one.

Run them with ``python -m pytest -m slow tests/faults``; with ``RTR_FAULT_MATRIX=results.json`` each cell
also records its observed outcome there, which ``python docs/fault_matrix.py results.json``
renders as the table of that run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..redis_cluster_support import ClusterGroup, SentinelGroup, redis_cli_path
from ..redis_support import INSTALL_HELP, RedisServer, redis_server_path
from .backends import make_backend
from .harness import Observation, Scene, check, record, run_in_process
from .matrix import FAULTS, NA, OUTCOMES, STEPS, STORAGES, cell_id, cells, expected
from .processes import Zygote, run_process_cell

pytestmark = pytest.mark.slow

PROCESS_FAULTS = ("exit", "sigkill", "sigstop")
RUNNABLE = [c for c in cells() if not expected(*c).startswith("n/a")]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with RedisServer(tmp_path_factory.mktemp("redis"), appendonly=True) as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    """Three masters with append-only files; a node may be down for seconds before the others
    mark it failing (``cluster-node-timeout`` 5 s), as the outage of a cell is."""
    if redis_server_path() is None or redis_cli_path() is None:
        pytest.fail(INSTALL_HELP + " (and redis-cli, which comes with it)")
    with ClusterGroup(tmp_path_factory.mktemp("cluster"), node_timeout=5000, appendonly=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A master, its replica and one Sentinel (quorum 1). The cells ask for their failovers
    (``SENTINEL FAILOVER``, see backends.py); ``down-after-milliseconds`` is 5 s so that the
    Sentinel starts none of its own meanwhile. Each cell starts with the group whole again (``heal``)."""
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with SentinelGroup(tmp_path_factory.mktemp("sentinel"), sentinels=1, quorum=1, down_after=5000) as group:
        yield group


SERVERS = {"redis": "redis_server", "redis-cluster": "redis_cluster", "redis-sentinel": "redis_sentinel"}


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    """Forks the process cells' workers (tests/faults/worker.py --serve)."""
    forker = Zygote(tmp_path_factory.mktemp("zygote"))
    yield forker
    forker.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("step", "fault", "storage"), RUNNABLE, ids=[cell_id(*c) for c in RUNNABLE])
def test_cell(step: str, fault: str, storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue(SERVERS[storage]) if storage in SERVERS else None
    if isinstance(server, SentinelGroup):
        server.heal()  # after the previous cell's failover
    key = f"fault:{cell_id(step, fault, storage)}:{uuid.uuid4().hex[:8]}"
    declared = expected(step, fault, storage)
    shared = fault in PROCESS_FAULTS  # a keyring that processes share
    backend = make_backend(storage, tmp_path, server, key, shared=shared, fault=fault)
    scene = Scene(step, fault, backend, declared)
    if shared:
        observation = run_process_cell(scene, tmp_path, request.getfixturevalue("zygote"))
    else:
        observation = run_in_process(scene)
    record(observation, step, fault, storage, declared)
    check(observation, declared, fault)


def _docs_script() -> Any:
    path = Path(__file__).resolve().parents[2] / "docs" / "fault_matrix.py"
    spec = importlib.util.spec_from_file_location("docs_fault_matrix", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_published_matrix_is_the_declared_one() -> None:
    """docs/_fault_matrix.inc is what docs/fault_matrix.py renders from the declared outcomes: a
    changed outcome fails here until the page is generated again (python docs/fault_matrix.py)."""
    script = _docs_script()
    matrix = script.load_matrix()
    assert script.INCLUDE.read_text() == script.render(matrix, script.declared(matrix))


def test_every_cell_is_declared_or_explained() -> None:
    cases = cells()
    assert len(cases) == len(STEPS) * len(FAULTS) * len(STORAGES)
    for case in cases:
        outcome = expected(*case)
        assert outcome in OUTCOMES or outcome[len("n/a: ") :] in NA, (case, outcome)


def _clean() -> Observation:
    """An observation that passes as ``ok``."""
    return Observation(
        "lease_read-close-file",
        first="ok",
        stored_after="current",
        recovery=["ok"] * 3,
        stored_final="current",
        memory_final="current",
        fired=["lease read"],
    )


VIOLATIONS = {
    "outcome": {"first": "RefreshError(timeout, retryable=True)"},
    "invariant 1": {"reused": ["1a2b3c4d"]},
    "invariant 2": {"stored_final": "spent", "stored_after": "spent"},
    "invariant 3": {"session_expired": 1},
    "invariant 4": {"threads_left": ["token-refresh"]},
    "invariant 5": {"recovery": ["ok", "bare ValueError: x", "ok"]},
    "never placed": {"fired": []},
}


@pytest.mark.parametrize("violation", VIOLATIONS)
def test_each_check_fails_on_a_made_up_violation(violation: str) -> None:
    check(_clean(), "ok", "close")
    observation = dataclasses.replace(_clean(), **VIOLATIONS[violation])
    with pytest.raises(AssertionError, match=violation):
        check(observation, "ok", "close")
