"""Run an app with uvicorn in a background thread (tests, benchmarks, notebooks)."""

from __future__ import annotations

import socket
import threading
import time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """`with BackgroundServer(app) as server: ... server.url` — started on a free loopback port, stopped
    on exit the way SIGTERM stops `omnilm serve` (in-flight requests finish first)."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0) -> None:
        import uvicorn

        self.app, self.host, self.port = app, host, port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", timeout_graceful_shutdown=60)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="omnilm-uvicorn", daemon=True)
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop accepting connections, let running requests finish, run the app's shutdown."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
