"""Redis Cluster and Redis Sentinel groups of real redis-server processes, for the tests.

Imported by tests/storage/test_redis_cluster.py and tests/storage/test_redis_sentinel.py. Every process listens on
127.0.0.1 on a free port (a cluster node on two: its clients' port and its cluster bus port), is
started by this module and stopped by PID: SIGTERM, then SIGKILL if it has not exited.

:class:`ClusterGroup`
    N masters and no replicas, ``cluster-enabled yes``, joined with
    ``redis-cli --cluster create ... --cluster-yes``; ready once every node's ``CLUSTER INFO``
    says ``cluster_state:ok`` and knows every other node.
:class:`SentinelGroup`
    One master, one replica (``--replicaof``) and S Sentinels (``redis-server CONF --sentinel``)
    with a short ``down-after-milliseconds``; :meth:`SentinelGroup.kill_master` SIGKILLs the
    master and :meth:`SentinelGroup.wait_failover` waits for the replica's promotion.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from requests_tokenrefresh._demo.procs import redis_answers, stop_process

from .redis_support import INSTALL_HELP, START_TIMEOUT, free_port, redis_server_path, wait_for

__all__ = ["ClusterGroup", "RedisProcess", "SentinelGroup", "redis_cli_path"]

#: Seconds a cluster gets to reach cluster_state:ok, and Sentinels to see the whole group.
READY_TIMEOUT = 30.0


def redis_cli_path() -> str | None:
    """The redis-cli executable (next to redis-server, or on PATH), or None if there is none."""
    server = redis_server_path()
    candidates = [os.path.join(os.path.dirname(server), "redis-cli")] if server else []
    candidates += [shutil.which("redis-cli") or "", "/usr/bin/redis-cli"]
    return next((c for c in candidates if c and os.path.exists(c)), None)


def _info(port: int, section: str, timeout: float = 1.0) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO`` for "cluster-info") of 127.0.0.1:port; {} if it does not answer."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        if section == "cluster-info":
            raw = client.cluster("INFO")  # redis-py parses it into a dict
            if isinstance(raw, dict):
                return {str(k): str(v) for k, v in raw.items()}
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k: str(v) for k, v in client.info(section).items()}
    except (redis.exceptions.RedisError, OSError):
        return {}
    finally:
        client.close()


class RedisProcess:
    """One redis-server (or, with ``sentinel``, one Sentinel) on 127.0.0.1, without persistence.

    Args:
        directory: its working directory (logs, nodes.conf, the Sentinel's config file).
        options: more command-line options; ``{port}`` in one is replaced by the port, and
            ``{bus}`` by a second free port (the cluster bus).
        sentinel: run ``redis-server CONF --sentinel`` with ``sentinel`` as CONF's body (after
            ``port``, ``bind``, ``dir`` and ``logfile``).
    """

    def __init__(self, directory: str | os.PathLike[str], *options: str, sentinel: str | None = None) -> None:
        self.directory = Path(directory)
        self.options = options
        self.sentinel = sentinel
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _command(self, executable: str, bus: int) -> list[str]:
        log = str(self.directory / "redis.log")
        if self.sentinel is not None:
            conf = self.directory / "sentinel.conf"  # Sentinel rewrites it: one file per Sentinel
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\nlogfile {log}\n"
                f"protected-mode no\n{self.sentinel}\n"
            )
            return [executable, str(conf), "--sentinel"]
        command = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
        command += ["--dir", str(self.directory), "--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--logfile", log]
        return command + [o.format(port=self.port, bus=bus) for o in self.options]

    def start(self) -> RedisProcess:
        executable = redis_server_path()
        if executable is None:
            raise RuntimeError(INSTALL_HELP)
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another program may take a free port before the server binds it
            self.port = free_port()
            bus = free_port()
            command = self._command(executable, bus)
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        return redis_answers(self.process, self.port, START_TIMEOUT)  # the demo's own wait

    def kill(self) -> None:
        """SIGKILL, by PID: no shutdown, nothing flushed to a replica that was not already sent."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(START_TIMEOUT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, START_TIMEOUT)  # by PID: only the server this object started

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **options: Any) -> Any:
        import redis

        options.setdefault("socket_timeout", 10)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def info(self, section: str) -> dict[str, str]:
        return _info(self.port, section)


class ClusterGroup:
    """A Redis Cluster of ``masters`` masters and no replicas on 127.0.0.1.

    ``node_timeout`` (ms) is ``cluster-node-timeout``: how long a node may be unreachable before
    the others mark it failing.
    """

    def __init__(self, directory: str | os.PathLike[str], *, masters: int = 3, node_timeout: int = 1000) -> None:
        self.directory = Path(directory)
        self.nodes = [
            RedisProcess(
                self.directory / f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes-{port}.conf",
                "--cluster-node-timeout",
                str(node_timeout),
                "--cluster-port",
                "{bus}",
            )
            for i in range(masters)
        ]

    def start(self) -> ClusterGroup:
        cli = redis_cli_path()
        if redis_server_path() is None or cli is None:
            raise RuntimeError(INSTALL_HELP + " (and redis-cli, which comes with it)")
        try:
            for node in self.nodes:
                node.start()
            command = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes)]
            command += ["--cluster-replicas", "0", "--cluster-yes"]
            done = subprocess.run(command, capture_output=True, timeout=60, check=False)
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
                raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")
            wait_for(self.ready, READY_TIMEOUT, "cluster_state:ok on every node", interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        """Whether every node says ``cluster_state:ok`` and knows all the others."""
        for node in self.nodes:
            info = node.info("cluster-info")
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(len(self.nodes)):
                return False
        return True

    def client(self, **options: Any) -> Any:
        """A ``redis.cluster.RedisCluster`` started from the first node."""
        from redis.cluster import RedisCluster

        options.setdefault("socket_timeout", 5)
        options.setdefault("socket_connect_timeout", 5)
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, **options)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ClusterGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelGroup:
    """One master, one replica and ``sentinels`` Sentinels watching them as ``service``.

    Args:
        quorum: Sentinels that must agree the master is down (a failover also needs a majority of
            all Sentinels to elect a leader).
        down_after: ms without an answer before a Sentinel thinks the master down.
        failover_timeout: ms of Sentinel's ``failover-timeout``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        service: str = "tokens",
        sentinels: int = 3,
        quorum: int = 2,
        down_after: int = 500,
        failover_timeout: int = 2000,
    ) -> None:
        self.directory = Path(directory)
        self.service = service
        self.quorum = quorum
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        # A replica's first sync waits repl-diskless-sync-delay (5 s by default) for more replicas.
        self.master = RedisProcess(self.directory / "master", "--repl-diskless-sync-delay", "0")
        self.replica: RedisProcess | None = None
        self.sentinels = [RedisProcess(self.directory / f"sentinel{i}", sentinel="") for i in range(sentinels)]

    def start(self) -> SentinelGroup:
        if redis_server_path() is None:
            raise RuntimeError(INSTALL_HELP)
        try:
            self.master.start()
            self.replica = RedisProcess(
                self.directory / "replica",
                "--replicaof",
                "127.0.0.1",
                str(self.master.port),
                "--repl-diskless-sync-delay",
                "0",
            ).start()
            replica = self.replica
            wait_for(
                lambda: replica.info("replication").get("master_link_status") == "up",
                READY_TIMEOUT,
                "the replica to sync",
                interval=0.05,
            )
            for sentinel in self.sentinels:
                sentinel.sentinel = (
                    f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} {self.quorum}\n"
                    f"sentinel down-after-milliseconds {self.service} {self.down_after}\n"
                    f"sentinel failover-timeout {self.service} {self.failover_timeout}\n"
                    f"sentinel parallel-syncs {self.service} 1\n"
                )
                sentinel.start()
            wait_for(self.watching, READY_TIMEOUT, "every Sentinel to see the master, its replica and each other", 0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinel_master(self, sentinel: RedisProcess) -> dict[str, Any]:
        import redis

        client = sentinel.client(socket_timeout=1, socket_connect_timeout=1)
        try:
            return dict(client.sentinel_master(self.service))
        except (redis.exceptions.RedisError, OSError):
            return {}
        finally:
            client.close()

    def watching(self) -> bool:
        """Whether every Sentinel knows the master, its replica and the other Sentinels."""
        for sentinel in self.sentinels:
            state = self._sentinel_master(sentinel)
            if state.get("num-slaves") != 1 or state.get("num-other-sentinels") != len(self.sentinels) - 1:
                return False
        return True

    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def master_port(self) -> int | None:
        """The master's port as the Sentinels agree on it (None while they do not)."""
        import redis

        ports = set()
        for sentinel in self.sentinels:
            client = sentinel.client(socket_timeout=1, socket_connect_timeout=1)
            try:
                address = client.sentinel_get_master_addr_by_name(self.service)
            except (redis.exceptions.RedisError, OSError):
                return None
            finally:
                client.close()
            ports.add(None if not address else int(address[1]))
        return ports.pop() if len(ports) == 1 else None

    def cut_replication(self) -> None:
        """Keep the replica from receiving the master's writes, until the master is gone.

        The replica is given a password the master does not want (its AUTH then fails at every
        reconnection) and its link is closed: what the master acknowledges from now on is lost
        to a failover, as a write not yet replicated is when a master dies.
        """
        assert self.replica is not None
        replica, master = self.replica.client(), self.master.client()
        try:
            replica.config_set("masterauth", "not-the-masters-password")
            master.client_kill_filter(_type="replica")
            wait_for(
                lambda: replica.info("replication").get("master_link_status") == "down",
                READY_TIMEOUT,
                "the replica's link to go down",
            )
        finally:
            replica.close()
            master.close()

    def heal_replica(self) -> None:
        """Undo :meth:`cut_replication`'s password (call it once the master is dead)."""
        assert self.replica is not None
        replica = self.replica.client()
        try:
            replica.config_set("masterauth", "")
        finally:
            replica.close()

    def kill_master(self) -> None:
        """SIGKILL the master by PID."""
        self.master.kill()

    def wait_failover(self, timeout: float) -> None:
        """Wait until the Sentinels name the replica the master and it says so itself."""
        replica = self.replica
        assert replica is not None

        def promoted() -> bool:
            return self.master_port() == replica.port and replica.info("replication").get("role") == "master"

        wait_for(promoted, timeout, "the Sentinels to promote the replica", interval=0.05)

    def stop(self) -> None:
        for process in [*self.sentinels, self.master, self.replica]:
            if process is not None:
                process.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
