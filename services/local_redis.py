"""Redis for local use (`tripwire up`, tests, benchmarks): a `redis-server` child process, or, as a last
resort, fakeredis' TCP server inside this process.

fakeredis' TCP handler closes a connection after any error reply (BUSYGROUP, NOGROUP, ...), which real Redis
never does, and which makes every subscriber start with a connection error. `EmbeddedRedis` answers the error
and keeps the connection open, as Redis does.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import redis
from fakeredis import TcpFakeServer
from fakeredis._clients._tcp_server import TCPFakeRequestHandler
from redis.exceptions import ResponseError

from services.orphans import preexec_die_with


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def spawn_redis_server(
    binary: str,
    port: int,
    directory: Path,
    *,
    persistent: bool = True,
    new_session: bool = False,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `redis-server` on 127.0.0.1:`port` with its files in `directory`.

    Persistent means AOF with fsync on every write, so an acknowledged write survives a crash (SIGKILL) of
    Redis, not only a clean restart; benchmarks turn it off to measure software rather than the disk.
    `die_with_parent` (only from a process with no other threads yet: it runs code between fork and exec)
    makes Redis stop when this process dies, even killed outright (services/orphans.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    durability = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
    return subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory.resolve()),
            *durability,
            "--save",
            "",
            "--protected-mode",
            "no",
            "--logfile",
            str((directory / "redis.log").resolve()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=new_session,
        # The caller vouches for having no other threads yet (see the docstring).
        preexec_fn=functools.partial(preexec_die_with, os.getpid()) if die_with_parent else None,  # noqa: PLW1509
    )


def wait_until_ready(url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until Redis at `url` answers PING (it may be loading its AOF); RuntimeError if it never does."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                if client.ping():
                    return
            except redis.RedisError as exc:
                last = exc
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis at {url} did not answer within {timeout:.0f}s: {last}")


class _KeepConnectionOnError(TCPFakeRequestHandler):
    def setup(self) -> None:
        super().setup()
        read = self.current_client.read_response

        def read_response(*args: Any, **kwargs: Any) -> Any:
            try:
                return read(*args, **kwargs)
            except ResponseError as exc:
                return exc  # encoded as an error reply by the handler's writer

        self.current_client.read_response = read_response  # type: ignore[method-assign]


class EmbeddedRedis:
    """An in-process Redis emulation on 127.0.0.1:`port`; `stop()` shuts it down. Nothing is persisted."""

    def __init__(self, port: int) -> None:
        self.server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        self.server.RequestHandlerClass = _KeepConnectionOnError
        self.server.daemon_threads = True  # a client left connected must not keep the process alive
        self.thread = threading.Thread(target=self.server.serve_forever, name="embedded-redis", daemon=True)
        self.thread.start()
        host, bound = self.server.server_address[:2]
        self.url = f"redis://{host}:{bound}/0"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
