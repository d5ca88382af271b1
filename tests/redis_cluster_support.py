"""Redis Cluster and Redis Sentinel groups of real redis-server processes, for the tests.

Imported by tests/storage/test_redis_cluster.py, test_redis_sentinel.py and test_redis_failover.py,
and by the fault matrix (tests/faults). Every process listens on 127.0.0.1 on a free port (a
cluster node on two: its clients' port and its cluster bus port), is started by this module and
stopped, stopped for a while (SIGSTOP, SIGCONT) or killed by PID; :meth:`RedisProcess.restart`
starts one again on the same ports, with its append-only file or empty.

:class:`ClusterGroup`
    N masters and no replicas, ``cluster-enabled yes``, joined with
    ``redis-cli --cluster create ... --cluster-yes``; ready once every node's ``CLUSTER INFO``
    says ``cluster_state:ok`` and knows every other node.
:class:`SentinelGroup`
    One master, one replica (``--replicaof``) and S Sentinels (``redis-server CONF --sentinel``)
    with a short ``down-after-milliseconds``; :meth:`SentinelGroup.kill_master` SIGKILLs the
    master and :meth:`SentinelGroup.wait_failover` waits for the replica's promotion
    (:meth:`~SentinelGroup.promote` then swaps the roles, :meth:`~SentinelGroup.force_failover`
    asks for one, :meth:`~SentinelGroup.heal` makes the group whole again, and
    :meth:`~SentinelGroup.backlog_replica` makes a stopped replica miss what follows).
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
#: How a Sentinel group's replica syncs (see SentinelGroup.__init__).
_SYNC = ("--repl-diskless-sync", "no")


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
    """One redis-server (or, with ``sentinel``, one Sentinel) on 127.0.0.1, without persistence unless ``appendonly``.

    Args:
        directory: its working directory (logs, nodes.conf, the Sentinel's config file).
        options: more command-line options; ``{port}`` in one is replaced by the port, and
            ``{bus}`` by a second free port (the cluster bus).
        sentinel: run ``redis-server CONF --sentinel`` with ``sentinel`` as CONF's body (after
            ``port``, ``bind``, ``dir`` and ``logfile``).
        appendonly: keep an append-only file (``appendfsync always``), so that :meth:`restart`
            keeps the data unless told to start empty.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *options: str,
        sentinel: str | None = None,
        appendonly: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.options = options
        self.sentinel = sentinel
        self.appendonly = appendonly
        self.port = 0
        self.bus = 0
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
        command += ["--dir", str(self.directory), "--save", "", "--daemonize", "no", "--logfile", log]
        command += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        return command + [o.format(port=self.port, bus=bus) for o in self.options]

    def start(self, *, same_ports: bool = False) -> RedisProcess:
        """Start it on free ports, or (``same_ports``, after :meth:`stop`) on the ports it had."""
        executable = redis_server_path()
        if executable is None:
            raise RuntimeError(INSTALL_HELP)
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another program may take a free port before the server binds it
            if not (same_ports and self.port):
                self.port, self.bus = free_port(), free_port()
            command = self._command(executable, self.bus)
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def restart(self, *, empty: bool = False, options: tuple[str, ...] | None = None) -> RedisProcess:
        """Stop it and start it again on the same ports: with its append-only file, or ``empty``.

        ``options`` replaces its extra options from then on (a master started again as a replica).
        """
        self.stop()
        if empty:
            for name in ("appendonlydir", "appendonly.aof", "dump.rdb"):
                path = self.directory / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        if options is not None:
            self.options = options
        return self.start(same_ports=True)

    def pause(self) -> None:
        """SIGSTOP, by PID: it keeps its connections and answers nothing until :meth:`resume`."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

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

    def __init__(
        self, directory: str | os.PathLike[str], *, masters: int = 3, node_timeout: int = 1000, appendonly: bool = False
    ) -> None:
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
                appendonly=appendonly,
            )
            for i in range(masters)
        ]
        self._shared: Any = None

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

    def node_for(self, key: str) -> RedisProcess:
        """The node that holds ``key``'s slot."""
        port = int(self.shared_client().get_node_from_key(key).port)
        return next(node for node in self.nodes if node.port == port)

    def shared_client(self) -> Any:
        """One ``RedisCluster`` client kept until :meth:`stop`, for the tests' own reads (a client
        learns the cluster's layout when it is made: tens of milliseconds each time)."""
        if self._shared is None:
            self._shared = self.client()
        return self._shared

    def client(self, **options: Any) -> Any:
        """A ``redis.cluster.RedisCluster`` started from the first node."""
        from redis.cluster import RedisCluster

        options.setdefault("socket_timeout", 5)
        options.setdefault("socket_connect_timeout", 5)
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, **options)

    def stop(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.close()
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
        # A sync through an RDB file: a diskless one waits repl-diskless-sync-delay (5 s by default)
        # for more replicas, and then the master streams nothing to the replica (WAIT times out)
        # until its first acknowledgement, up to a second later.
        self.master = RedisProcess(self.directory / "master", *_SYNC)
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
                *_SYNC,
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
            wait_for(self.healthy, READY_TIMEOUT, "the replica to acknowledge writes, as the Sentinels know", 0.05)
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

    def backlog_replica(self, limit: int = 256) -> None:
        """With the replica stopped (:meth:`RedisProcess.pause`), fill the replication link.

        1-MiB values are written to the master until the kernel's socket buffers are full and the
        master keeps what it sends the replica in its own memory (``omem`` of the replica's
        client): a write made after this is lost to a SIGKILL of the master, even if the replica
        is continued then. (Before, it still reached the replica's socket and was read later.)
        """
        master = self.master.client()
        try:
            for i in range(limit):
                master.set(f"backlog:{i}", b"x" * 2**20)
                replicas = master.client_list(_type="replica")
                if replicas and int(replicas[0].get("omem", 0)) >= 2**20:
                    return
        finally:
            master.close()
        raise RuntimeError(f"the replication link took {limit} MiB without backing up: is the replica stopped?")

    def acknowledges(self) -> bool:
        """Whether the replica acknowledges a write at once (``WAIT``): a replica that has just
        synced says nothing of its offset for up to a second, and a ``WAIT`` then times out."""
        import redis

        client = self.master.client(socket_timeout=1, socket_connect_timeout=1)
        try:
            client.set("probe:acknowledged", "1")
            return int(client.wait(1, 100)) >= 1
        except (redis.exceptions.RedisError, OSError):
            return False
        finally:
            client.close()

    def force_failover(self) -> None:
        """``SENTINEL FAILOVER``: the first Sentinel promotes the replica now, without waiting for
        ``down-after-milliseconds`` or the others' agreement (the master is dead: see :meth:`kill_master`)."""
        client = self.sentinels[0].client(socket_timeout=5, socket_connect_timeout=5)
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.service)
        finally:
            client.close()

    def promote(self, timeout: float) -> None:
        """:meth:`wait_failover`, then call the promoted replica the master (and the old master the replica)."""
        self.wait_failover(timeout)
        assert self.replica is not None
        self.master, self.replica = self.replica, self.master
        wait_for(self.settled, timeout, "the Sentinels to end the failover", 0.05)

    def settled(self) -> bool:
        """Whether every Sentinel sees the master up, with no failover under way (clients find it then)."""
        for sentinel in self.sentinels:
            state = self._sentinel_master(sentinel)
            if state.get("flags") != "master" or int(state.get("port", 0)) != self.master.port:
                return False
        return True

    def healthy(self) -> bool:
        """Whether the Sentinels name the master, which has the replica online, and know the replica well."""
        import redis

        replica = self.replica
        if replica is None or not (self.master.alive() and replica.alive()):
            return False
        if self.master_port() != self.master.port:
            return False
        if replica.info("replication").get("master_link_status") != "up":
            return False
        if self.master.info("replication").get("connected_slaves") != "1" or not self.acknowledges():
            return False
        for sentinel in self.sentinels:
            client = sentinel.client(socket_timeout=1, socket_connect_timeout=1)
            try:
                known = client.sentinel_slaves(self.service)
            except (redis.exceptions.RedisError, OSError):
                return False
            finally:
                client.close()
            # Known, answering, and its INFO read since it was (re)connected: a Sentinel promotes
            # no replica it has no INFO of ("NOGOODSLAVE").
            ours = [r for r in known if int(r.get("port", 0)) == replica.port]
            if len(ours) != 1 or ours[0].get("is_sdown") or ours[0].get("is_disconnected"):
                return False
            if ours[0].get("master-link-status") != "ok":
                return False
        return True

    def heal(self, timeout: float = READY_TIMEOUT) -> None:
        """After a fault, bring the group back: the master the Sentinels name, and a synced replica they know.

        Every process is continued; a failover still under way is waited for; the other server,
        killed or stopped, is (started again empty and) made the master's replica, with no wrong
        password (:meth:`cut_replication`).
        """
        for process in (self.master, self.replica):
            if process is not None:
                process.resume()
        if self.healthy():
            return
        assert self.replica is not None
        wait_for(lambda: self.master_port() is not None, timeout, "the Sentinels to agree on a master", 0.05)
        if self.master_port() == self.replica.port:
            self.master, self.replica = self.replica, self.master
        replica = self.replica
        assert replica is not None
        options = ("--replicaof", "127.0.0.1", str(self.master.port), *_SYNC)
        if not self.master.alive():
            raise RuntimeError("the master the Sentinels name is not running")
        if not replica.alive():
            replica.restart(empty=True, options=options)
        client = replica.client()
        try:
            client.config_set("masterauth", "")
            client.replicaof("127.0.0.1", self.master.port)
        finally:
            client.close()
        replica.options = options
        wait_for(self.healthy, timeout, "the group to be whole again", 0.05)

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
