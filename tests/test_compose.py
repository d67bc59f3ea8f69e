"""docker-compose.yml is consistent with the config it mounts (no Docker engine here to run it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from services.notifier.config import load_routing
from shared.config import load_config, rule_file_paths

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("collector", "evaluator", "notifier")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _mounted_config(service: dict) -> tuple[Path, str]:
    """The host file behind the container path of the service's -c argument."""
    command = service["command"]
    container_path = command[command.index("-c") + 1]
    for volume in service["volumes"]:
        host, container, *_ = volume.split(":")
        if container_path.startswith(container.rstrip("/") + "/"):
            return REPO / host / container_path[len(container.rstrip("/")) + 1 :], container_path
    raise AssertionError(f"{container_path} is not on a mounted volume")


@pytest.mark.parametrize("name", SERVICES)
def test_service_command_ports_health_and_env_match_the_config(compose: dict, name: str):
    service = compose["services"][name]
    assert service["command"][:2] == ["tripwire", name]
    config_file, _ = _mounted_config(service)
    assert config_file.is_file()
    env = {k: str(v) for k, v in service["environment"].items() if not str(v).startswith("${")}
    config = load_config(config_file, environ=env)

    port = int(getattr(config, name).listen.rpartition(":")[2])
    assert service["ports"] == [f"{port}:{port}"]
    health = " ".join(service["healthcheck"]["test"])
    assert re.search(rf"http://127\.0\.0\.1:{port}/readyz", health), health
    assert service["restart"] == "always"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"

    redis_url = urlsplit(config.redis.url)
    assert redis_url.hostname == "redis" and (redis_url.port or 6379) == 6379
    assert service.get("build") == "." and service["image"] == compose["services"]["collector"]["image"]


def test_the_mounted_config_references_files_that_exist(compose: dict):
    config_file, _ = _mounted_config(compose["services"]["evaluator"])
    config = load_config(config_file, environ={})
    assert rule_file_paths(config), "rule_files match no file"
    assert config.alerting.config_file is not None
    load_routing(config.alerting.config_file)


def test_redis_persists_and_reports_health(compose: dict):
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["restart"] == "always"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_image_provides_the_tripwire_command():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["tripwire"] == "services.cli:main"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install ." in dockerfile
    for package in ("shared", "services"):
        assert f"COPY {package} ./{package}" in dockerfile
