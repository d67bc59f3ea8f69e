"""`tripwire up`: the whole system on one machine, for trying it out and for local development.

Redis comes from, in order: TRIPWIRE_REDIS_URL or `redis.url` in the config file; a `redis-server` spawned on
a free port with its data (AOF, fsync always) under `.tripwire/redis`; or, when neither is available, an
embedded in-process emulation (fakeredis) with a loud warning, since it keeps nothing across restarts. The
three services run as child processes with their output prefixed by name; a child that crashes is restarted.
Ctrl-C (or SIGTERM) stops the children, then Redis, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from services.local_redis import (
    EmbeddedRedis,
    free_port,
    redis_server_binary,
    spawn_redis_server,
    wait_until_ready,
)
from services.orphans import die_with_parent
from shared.config import Config, load_config
from shared.yamlfile import ConfigError, ConfigErrors

SERVICES = ("collector", "evaluator", "notifier")
CONFIG_ERROR_EXIT = 2
SUPERVISOR_PID = "TRIPWIRE_SUPERVISOR_PID"


def exit_with_supervisor() -> None:
    """In a service that `tripwire up` started: stop (SIGTERM) when the supervisor dies, even killed
    outright, instead of living on as an orphan that holds its port (services/orphans.py). The variable is
    consumed, so nothing this process starts inherits it."""
    parent = os.environ.pop(SUPERVISOR_PID, "")
    if not parent.isdigit():
        return
    if not die_with_parent(int(parent)):
        print(
            f"tripwire: {SUPERVISOR_PID}={parent} names a process that is not this one's parent "
            "(the tripwire up that started it has exited, or the variable was inherited): exiting",
            file=sys.stderr,
        )
        raise SystemExit(1)


_COLORS = {
    "collector": "36",
    "evaluator": "35",
    "notifier": "33",
    "demo": "32",
    "receiver": "34",
    "audit": "31",
    "tripwire": "1",
}


def say(source: str, line: str) -> None:
    """Print one line prefixed by its source, coloured when stdout is a terminal."""
    prefix = f"{source:<9}|"
    if sys.stdout.isatty():
        prefix = f"\x1b[{_COLORS.get(source, '0')}m{prefix}\x1b[0m"
    try:
        print(f"{prefix} {line}", flush=True)
    except OSError:
        # Whoever read our output went away (EPIPE from `| head`, EIO from a terminal that hung up):
        # supervise on (or stop in order) quietly rather than die and leave the services running as
        # orphans. fd 1 becomes /dev/null so later writes succeed.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _port_taken(listen: str) -> bool:
    host, _, port = listen.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host or "0.0.0.0", int(port)))
        except OSError:
            return True
    return False


def _local_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


@dataclass
class RedisRuntime:
    url: str
    kind: str  # "external", "redis-server", "embedded"
    stop: Callable[[], None] = lambda: None
    directory: Path | None = None  # where a spawned redis-server keeps its AOF


def _redis_explicitly_configured(config_path: Path | None) -> bool:
    if os.environ.get("TRIPWIRE_REDIS_URL"):
        return True
    if config_path is None:
        return False
    from shared.yamlfile import load_yaml

    data = load_yaml(config_path).data or {}
    return isinstance(data.get("redis"), dict) and "url" in data["redis"]


def start_redis(config: Config, config_path: Path | None, data_dir: Path, embedded: bool) -> RedisRuntime:
    if _redis_explicitly_configured(config_path):
        return RedisRuntime(config.redis.url, "external")
    binary = redis_server_binary()
    if binary and not embedded:
        return _spawn_redis_server(binary, data_dir / "redis")
    server = EmbeddedRedis(free_port())
    return RedisRuntime(server.url, "embedded", server.stop)


def _spawn_redis_server(binary: str, directory: Path) -> RedisRuntime:
    port = free_port()
    # Own session: Ctrl-C in the terminal reaches only the supervisor, which stops Redis last.
    process = spawn_redis_server(binary, port, directory, new_session=True, die_with_parent=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until_ready(url, process=process)
    except RuntimeError as exc:
        process.kill()
        raise RuntimeError(f"{exc}; see {directory / 'redis.log'}") from None

    def stop() -> None:
        process.terminate()  # SIGTERM: Redis flushes its AOF and exits
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

    return RedisRuntime(url, "redis-server", stop, directory)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops children in order
        )
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process and self.process.stdout
        async for raw in self.process.stdout:
            say(self.name, raw.decode(errors="replace").rstrip())

    async def stop(self, grace: float = 15.0) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.process.terminate()
        try:
            return await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()
        finally:
            if self.pump:
                await asyncio.gather(self.pump, return_exceptions=True)


@dataclass
class Supervisor:
    config: Config
    config_path: Path | None
    redis: RedisRuntime
    demo: bool
    children: list[Child] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TRIPWIRE_REDIS_URL"] = self.redis.url
        env.setdefault("TRIPWIRE_LOG_FORMAT", "text")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[SUPERVISOR_PID] = str(os.getpid())  # children stop when we die, even by SIGKILL
        return env

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # SIGHUP: the terminal closed (a dropped ssh session); stop everything as Ctrl-C does, unless it is
        # ignored (`nohup tripwire up`), which is asking to outlive the terminal.
        hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
        for sig in (signal.SIGINT, signal.SIGTERM, *hangup):
            loop.add_signal_handler(sig, self.stopping.set)
        argv_config = ["-c", str(self.config_path)] if self.config_path else []
        env = self._child_env()
        receivers = None
        if self.demo:
            from services.demo_receivers import start_demo_receivers

            receivers = await start_demo_receivers(env, say)
        self.children = [
            Child(name, [sys.executable, "-m", "services.cli", name, *argv_config], env) for name in SERVICES
        ]
        for child in self.children:
            await child.start()
        demo_task: asyncio.Task[None] | None = None
        try:
            if not await self._wait_ready():
                return CONFIG_ERROR_EXIT if self._config_error() else 1
            self._banner()
            if self.demo:
                from services.demo import DemoFlags, run_demo

                flags = DemoFlags(
                    _local_url(self.config.notifier.listen),
                    self.config.admin_token,
                    self.redis.url,
                    self.config.redis.prefix,
                )
                demo_task = asyncio.create_task(
                    run_demo(_local_url(self.config.collector.listen), self.config.ingest_token, say, flags)
                )
            return await self._watch()
        finally:
            if demo_task:
                demo_task.cancel()
                await asyncio.gather(demo_task, return_exceptions=True)
            say("tripwire", "stopping services...")
            for child in reversed(self.children):
                code = await child.stop()
                say("tripwire", f"{child.name} stopped (exit {code})")
            if receivers is not None:
                await receivers.stop()

    def _config_error(self) -> bool:
        return any(c.process and c.process.returncode == CONFIG_ERROR_EXIT for c in self.children)

    async def _wait_ready(self, within: float = 60.0) -> bool:
        deadline = time.monotonic() + within
        pending = {c.name for c in self.children}
        async with aiohttp.ClientSession() as session:
            while pending and not self.stopping.is_set():
                for child in self.children:
                    if child.name not in pending:
                        continue
                    if child.process and child.process.returncode is not None:
                        say(
                            "tripwire",
                            f"{child.name} exited during start-up (exit {child.process.returncode})",
                        )
                        return False
                    listen = getattr(self.config, child.name).listen
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(
                            _local_url(listen) + "/readyz", timeout=aiohttp.ClientTimeout(total=1)
                        ) as r:
                            if r.status == 200:
                                pending.discard(child.name)
                if time.monotonic() > deadline:
                    say("tripwire", f"not ready after {within:.0f}s: {', '.join(sorted(pending))}")
                    return False
                await asyncio.sleep(0.2)
        return not pending

    def _banner(self) -> None:
        redis_note = {
            "external": f"Redis at {self.redis.url}",
            "redis-server": f"redis-server at {self.redis.url} (AOF in {self.redis.directory})",
            "embedded": f"EMBEDDED Redis emulation at {self.redis.url} (nothing persists)",
        }[self.redis.kind]
        say("tripwire", f"up: {redis_note}")
        for name in SERVICES:
            say("tripwire", f"  {name:<9} {_local_url(getattr(self.config, name).listen)}")
        say("tripwire", "Ctrl-C stops everything.")

    async def _watch(self) -> int:
        while not self.stopping.is_set():
            for child in self.children:
                code = child.process.returncode if child.process else None
                if code is None:
                    continue
                if code == CONFIG_ERROR_EXIT:
                    say("tripwire", f"{child.name} refused its configuration (exit 2); stopping")
                    return CONFIG_ERROR_EXIT
                child.restarts += 1
                delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                say(
                    "tripwire",
                    f"{child.name} exited (code {code}); restart #{child.restarts} in {delay:.1f}s",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                if not self.stopping.is_set():
                    await child.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)
        return 0


def up(config_path: Path | None, *, demo: bool, data_dir: Path, embedded: bool) -> int:
    """Run everything until Ctrl-C; returns the exit code."""
    try:
        config = load_config(config_path)
    except (ConfigErrors, ConfigError) as exc:
        for line in str(exc).splitlines():
            say("tripwire", f"config error: {line}")
        return CONFIG_ERROR_EXIT
    busy = [
        f"{name} ({getattr(config, name).listen})"
        for name in SERVICES
        if _port_taken(getattr(config, name).listen)
    ]
    if busy:
        say(
            "tripwire",
            f"port in use for {', '.join(busy)}: is tripwire already running? "
            "Change `listen` in the config or stop the other process.",
        )
        return 1
    try:
        redis = start_redis(config, config_path, data_dir, embedded)
    except RuntimeError as exc:
        say("tripwire", str(exc))
        return 1
    if redis.kind == "embedded":
        for line in (
            "!" * 78,
            "WARNING: no redis-server found (or --embedded-redis given): using an EMBEDDED in-process Redis",
            "emulation. It keeps NOTHING across restarts and is for demos only. Install Redis",
            "(apt-get install redis-server) or set TRIPWIRE_REDIS_URL for anything real.",
            "!" * 78,
        ):
            say("tripwire", line)
    try:
        return asyncio.run(Supervisor(config, config_path, redis, demo).run())
    finally:
        redis.stop()
        say("tripwire", "stopped.")
