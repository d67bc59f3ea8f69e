"""`tripwire up`: the whole system from one command, as `make run` uses it."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services.local_redis import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


class Up:
    """`tripwire up` as a child process whose output lines are collected as they come."""

    def __init__(self, tmp_path: Path, *args: str, wrapper: tuple[str, ...] = ()) -> None:
        self.ports = {name: free_port() for name in ("collector", "evaluator", "notifier")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
        env.update(
            {f"TRIPWIRE_{name.upper()}_LISTEN": f"127.0.0.1:{port}" for name, port in self.ports.items()}
        )
        env["TRIPWIRE_REDIS_PREFIX"] = f"up-{tmp_path.name}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                *wrapper,
                sys.executable,
                "-m",
                "services.cli",
                "up",
                "-c",
                str(REPO / "examples" / "tripwire.yml"),
                "--data-dir",
                str(tmp_path / "data"),
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds until a line containing `text` appeared; fails after `timeout`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if any(text in line for line in self.lines):
                return time.monotonic() - started
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r} after {timeout}s:\n" + "\n".join(self.lines[-60:]))

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = self.process.wait(timeout=60)
        self.reader.join(timeout=5)
        return code


def send_metric(up: Up) -> subprocess.CompletedProcess[str]:
    """`tripwire send metric` to the collector `up` runs."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "send",
            "metric",
            "checkout_error_ratio",
            "0.5",
            "service=checkout",
            "--url",
            f"http://127.0.0.1:{up.ports['collector']}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_up_demo_fires_in_60s_then_its_kill_switch_turns_the_flag_off_and_stops_cleanly(tmp_path: Path):
    up = Up(tmp_path, "--demo")
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        elapsed = up.wait_for("FIRING[1] HighErrorRate", timeout=60)
        assert elapsed < 60
        # The alert's kill switch turns the release's flag off, audited, and the demo app sees it.
        up.wait_for("audit    | flipped: flag new-checkout (builtin)", timeout=30)
        up.wait_for("flag new-checkout is OFF (kill switch)", timeout=30)
    finally:
        code = up.interrupt()
    assert code == 0, "\n".join(up.lines[-40:])
    output = "\n".join(up.lines)
    assert "redis-server at redis://127.0.0.1:" in output or "EMBEDDED" in output
    for name in ("collector", "evaluator", "notifier"):
        assert f"{name} stopped (exit 0)" in output
    assert "Traceback" not in output


def test_up_falls_back_to_embedded_redis_with_a_loud_warning(tmp_path: Path):
    up = Up(tmp_path, "--embedded-redis")
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        sent = send_metric(up)
        assert sent.returncode == 0, sent.stderr
        assert "accepted: 1 item(s)" in sent.stdout
    finally:
        code = up.interrupt()
    output = "\n".join(up.lines)
    assert code == 0, output[-3000:]
    assert "using an EMBEDDED in-process Redis" in output
    assert "Traceback" not in output, output[output.find("Traceback") - 300 :][:4000]


def test_a_closed_terminal_stops_everything_as_ctrl_c_does(tmp_path: Path):
    # SIGHUP (a dropped ssh session) left the services running as orphans holding their ports.
    up = Up(tmp_path, "--embedded-redis")
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        up.process.send_signal(signal.SIGHUP)
        code = up.process.wait(timeout=60)
        up.reader.join(timeout=5)
    finally:
        if up.process.poll() is None:
            up.interrupt()
    output = "\n".join(up.lines)
    assert code == 0, output[-3000:]
    for name in ("collector", "evaluator", "notifier"):
        assert f"{name} stopped (exit 0)" in output


@pytest.mark.parametrize("reader", ["pipe", "terminal"])
def test_output_to_a_reader_that_went_away_is_not_fatal(reader: str):
    # `tripwire up | head` (EPIPE) or a terminal that hung up (EIO): the supervisor died of the write error
    # and left its services orphaned.
    script = "import sys\nfrom services.up import say\nsys.stdin.readline()\nsay('a', 'b')\nsay('a', 'c')\n"
    if reader == "pipe":
        out, gone = subprocess.PIPE, None
    else:
        gone, out = pty.openpty()  # (the terminal's side, the program's side)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin
    if child.stdout:
        child.stdout.close()  # the reader is gone before anything is said
    else:
        os.close(out)
        os.close(gone)  # the terminal hangs up: writes to it fail with EIO
    _, errors = child.communicate("go\n", timeout=30)
    assert (child.returncode, errors) == (0, "")


def test_nohup_tripwire_up_outlives_the_terminal(tmp_path: Path):
    up = Up(tmp_path, "--embedded-redis", wrapper=("nohup",))
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        up.process.send_signal(signal.SIGHUP)
        # A whole round trip through the collector: a handled SIGHUP would have begun the stop by then.
        assert send_metric(up).returncode == 0
        assert up.process.poll() is None
        assert not any("stopping services" in line for line in up.lines)
    finally:
        code = up.interrupt()
    assert code == 0


def test_services_and_redis_stop_when_up_is_killed_outright(tmp_path: Path):
    # A redis-server left running kept its AOF directory, which the next `up` would open a second time.
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: up would use its embedded Redis, which dies with it")
    up = Up(tmp_path)
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
    finally:
        up.process.kill()  # no chance to stop its children: they must notice by themselves
        up.process.wait(timeout=10)
        up.reader.join(timeout=5)
    ports = dict(up.ports)
    [redis_line] = [line for line in up.lines if "redis-server at redis://127.0.0.1:" in line]
    ports["redis-server"] = int(redis_line.split("redis://127.0.0.1:")[1].split("/")[0])
    deadline = time.monotonic() + 30
    listening = set(ports)
    while listening and time.monotonic() < deadline:
        for name in list(listening):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", ports[name])) != 0:
                    listening.discard(name)
        time.sleep(0.1)
    assert not listening, f"still serving after the supervisor died: {sorted(listening)}"


def test_up_refuses_a_bad_config_with_its_position(tmp_path: Path):
    bad = tmp_path / "tripwire.yml"
    bad.write_text("global:\n  evaluation_interval: soon\n")
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "-c", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{bad}:2:3: global.evaluation_interval: not a valid duration string: 'soon'" in result.stdout
