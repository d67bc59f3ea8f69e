"""The last-resort Redis for `tripwire up`: fakeredis' TCP server, in this process, with nothing on disk.

fakeredis' TCP handler closes a connection after any error reply (BUSYGROUP, NOGROUP, ...), which real Redis
never does, and which makes every subscriber start with a connection error. This handler answers the error and
keeps the connection open, as Redis does.
"""

from __future__ import annotations

import threading
from typing import Any

from fakeredis import TcpFakeServer
from fakeredis._clients._tcp_server import TCPFakeRequestHandler
from redis.exceptions import ResponseError


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
    """An in-process Redis emulation on 127.0.0.1:`port`; `stop()` shuts it down."""

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
