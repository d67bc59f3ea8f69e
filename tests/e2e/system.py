"""The three services as real subprocesses, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from services.local_redis import free_port
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("collector", "evaluator", "notifier")


@dataclass
class System:
    """Config files in `dir`, one process per service, logs in `dir/<service>.log`."""

    dir: Path
    redis_url: str
    prefix: str
    rules: str
    routing: dict
    overrides: dict = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def write_config(self) -> Path:
        self.ports = {name: free_port() for name in SERVICES}
        (self.dir / "rules.yml").write_text(self.rules)
        (self.dir / "alertmanager.yml").write_text(yaml.safe_dump(self.routing))
        config = {
            "global": {"evaluation_interval": "250ms"},
            "redis": {"url": self.redis_url, "prefix": self.prefix},
            "streams": {"claim_idle": "2s", "reclaim_interval": "500ms"},
            "rule_files": ["rules.yml"],
            "alerting": {"config_file": "alertmanager.yml"},
            "collector": {"listen": f"127.0.0.1:{self.ports['collector']}"},
            "evaluator": {"listen": f"127.0.0.1:{self.ports['evaluator']}", "resend_delay": "1s"},
            "notifier": {"listen": f"127.0.0.1:{self.ports['notifier']}"},
            "log": {"level": "info", "format": "json"},
        }
        for key, value in self.overrides.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        path = self.dir / "tripwire.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    @contextlib.asynccontextmanager
    async def running(self, *services: str) -> AsyncIterator[System]:
        """Write the config, start `services` (all three by default) and wait until they are ready; on the
        way out stop everything and require clean exits. Prints the logs if anything fails on the way."""
        self.write_config()
        names = services or SERVICES
        for name in names:
            self.start(name)
        try:
            for name in names:
                await self.wait_ready(name)
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            codes = self.stop_all()
        assert all(code == 0 for code in codes.values()), f"unclean exit {codes}\n{self.logs()}"

    def start(self, service: str, replica: str | None = None) -> None:
        """Start `service`; `replica` names a second instance (its own consumer name and port)."""
        name = replica or service
        log = (self.dir / f"{name}.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
        if replica is not None:
            self.ports.setdefault(replica, free_port())
            env["TRIPWIRE_STREAMS_CONSUMER_NAME"] = replica
            env[f"TRIPWIRE_{service.upper()}_LISTEN"] = f"127.0.0.1:{self.ports[replica]}"
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", service, "-c", str(self.dir / "tripwire.yml")],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    def kill(self, service: str) -> None:
        """SIGKILL: no cleanup, no graceful stop, exactly like a crash."""
        process = self.processes.pop(service)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        self.processes.clear()
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"----- {name} -----\n{(self.dir / f'{name}.log').read_text(errors='replace')[-6000:]}"
            for name in sorted({*SERVICES, *self.processes})
            if (self.dir / f"{name}.log").exists()
        )

    async def wait_ready(self, service: str, timeout: float = 30.0) -> None:
        async def ready() -> bool:
            process = self.processes[service]
            if process.poll() is not None:
                raise AssertionError(f"{service} exited with {process.returncode}\n{self.logs()}")
            try:
                async with aiohttp.ClientSession() as s, s.get(self.url(service, "/readyz")) as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=timeout, interval=0.1, what=f"{service} /readyz")
