"""Every cell of the fault matrix (``matrix.py``) that can occur, one test each:
``test_cell[<step>-<fault>-<storage>]``; and the published table is the declared one.

Run them with ``python -m pytest tests/faults``; with ``RTR_FAULT_MATRIX=results.json`` each cell
also records its observed outcome there, which ``python docs/fault_matrix.py results.json``
renders as the table of that run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..redis_support import INSTALL_HELP, RedisServer, redis_server_path
from .backends import make_backend
from .harness import Scene, check, record, run_in_process
from .matrix import cell_id, cells, expected
from .processes import run_process_cell

pytestmark = pytest.mark.slow

PROCESS_FAULTS = ("exit", "sigkill", "sigstop")
RUNNABLE = [c for c in cells() if not expected(*c).startswith("n/a")]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with RedisServer(tmp_path_factory.mktemp("redis"), appendonly=True) as server:
        yield server


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("step", "fault", "storage"), RUNNABLE, ids=[cell_id(*c) for c in RUNNABLE])
def test_cell(step: str, fault: str, storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("redis_server") if storage == "redis" else None
    key = f"fault:{cell_id(step, fault, storage)}:{uuid.uuid4().hex[:8]}"
    declared = expected(step, fault, storage)
    shared = fault in PROCESS_FAULTS  # a keyring that processes share
    scene = Scene(step, fault, make_backend(storage, tmp_path, server, key, shared=shared), declared)
    observation = run_process_cell(scene, tmp_path) if shared else run_in_process(scene)
    record(observation, step, fault, storage, declared)
    check(observation, declared, fault)
