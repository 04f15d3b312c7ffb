"""A real HTTP receiver on a loopback port (a thread running ``http.server``) that records
what Plan B posts and answers as each test scripts it (status codes, delays)."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # Answers in order (the last one repeats): a status code, or ("sleep", seconds, status).
    answers: list[Any] = field(default_factory=lambda: [200])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *answers: Any) -> None:
        with self.lock:
            self.answers = list(answers)

    def next_answer(self) -> Any:
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def hook(self, path: str = "/hook") -> str:
        return self.url + path


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.requests.append(Received(self.path, {k: v for k, v in self.headers.items()}, body))
            answer = receiver.next_answer()
            if isinstance(answer, tuple):
                _sleep, seconds, answer = answer
                time.sleep(seconds)
            try:
                self.send_response(answer)
                payload = b'{"ok": true}' if answer < 300 else b"receiver says no"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver("")))
    box = Receiver(f"http://127.0.0.1:{server.server_port}")
    server.RequestHandlerClass = _handler(box)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
