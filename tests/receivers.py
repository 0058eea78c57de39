"""Real local receivers of notifications, started by the tests: an HTTP webhook receiver (stdlib ``http.server``
in a thread) and an SMTP server (``aiosmtpd``), each keeping what it received; and ports where nothing answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Received:
    """What a receiver got, in order, with a way to wait for a message."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def add(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait_for(self, match: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        """The first item ``match`` accepts, waiting up to ``timeout`` s; AssertionError listing what came."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((item for item in self.items if match(item)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing matching arrived within {timeout:g} s; received: {self.items!r}")
                self._changed.wait(left)

    def matching(self, match: Callable[[Any], bool]) -> list[Any]:
        with self._changed:
            return [item for item in self.items if match(item)]


class WebhookReceiver(_Received):
    """Every JSON body POSTed to it (``items``); answers ``status`` (200 by default)."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.paths.append(self.path)
                receiver.add(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if receiver.status < 300 else b"no")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret-token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailReceiver(_Received):
    """An SMTP server (aiosmtpd) keeping every mail as an ``email.message.Message``; with ``login``, a
    ``(user, password)`` it requires (AUTH without TLS, on the loopback)."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        super().__init__()
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd)
                mail = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.add(mail)
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = login is not None and (data.login.decode(), data.password.decode()) == login
            return AuthResult(success=ok, handled=False)

        self.envelopes: list[tuple[str, list[str]]] = []
        kwargs: dict[str, Any] = {}
        if login is not None:
            kwargs = {"authenticator": authenticate, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port(), **kwargs)
        self.port = self.controller.port

    def __enter__(self) -> MailReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @staticmethod
    def body(mail: Message) -> str:
        payload = mail.get_payload(decode=True)
        return payload.decode() if isinstance(payload, bytes) else str(mail.get_payload())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port where nothing listens (a receiver that is down: connections are refused)."""
    return _free_port()


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a receiver that hangs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])
