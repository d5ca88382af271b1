"""The fault matrix: every fault at every step of the refresh protocol, for every storage.

``matrix.py`` declares the cells and their outcomes, ``inject.py`` places a fault at a step,
``backends.py`` injects the storages' real faults, ``harness.py`` runs an in-process cell and
checks the invariants, ``processes.py`` and ``worker.py`` run the cells that need another process
(interpreter exit, SIGKILL, SIGSTOP). ``docs/fault_matrix.py`` publishes the table.
"""
