"""Real Redis servers for tests: a testcontainers Redis when a Docker engine answers, else a `redis-server`
process on a free port in a temporary directory. Both run with AOF persistence (fsync always) so that fault
tests can stop and restart Redis and find their data again."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from services.local_redis import free_port, redis_server_binary, spawn_redis_server, wait_until_ready


def docker_available() -> bool:
    """True when a Docker engine answers (not just a docker client on PATH)."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
    except Exception:
        return False
    return True


class LocalRedisServer:
    """`redis-server` as a child process; stop() and start() keep the data directory (AOF on)."""

    def __init__(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install redis-server; .ci/run does it)"
            )
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="tripwire-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn_redis_server(self.binary, self.port, self.dir)
        wait_until_ready(self.url, timeout=20, process=self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """Crash Redis (SIGKILL): AOF with fsync always must still hold every acknowledged write."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def wipe(self) -> None:
        """Forget all data, as a Redis without persistence does when it restarts (only while stopped)."""
        assert self.process is None
        shutil.rmtree(self.dir / "appendonlydir", ignore_errors=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ContainerRedisServer:
    """testcontainers' Redis with AOF on a fixed host port, so the URL survives stop and start."""

    def __init__(self) -> None:
        from testcontainers.redis import RedisContainer

        self.port = free_port()
        self.container = (
            RedisContainer("redis:7")
            .with_command("redis-server --appendonly yes --appendfsync always --save ''")
            .with_bind_ports(6379, self.port)
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._started = False

    def start(self) -> None:
        if not self._started:
            self.container.start()
            self._started = True
        else:
            self.container.get_wrapped_container().start()
        wait_until_ready(self.url, timeout=20)

    def stop(self) -> None:
        self.container.get_wrapped_container().stop(timeout=10)

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def wipe(self) -> None:
        self.container.get_wrapped_container().start()
        wait_until_ready(self.url, timeout=20)
        redis.Redis.from_url(self.url).execute_command("FLUSHALL")
        self.stop()

    def close(self) -> None:
        self.container.stop()


def make_server() -> LocalRedisServer | ContainerRedisServer:
    server: LocalRedisServer | ContainerRedisServer
    server = ContainerRedisServer() if docker_available() else LocalRedisServer()
    server.start()
    return server
