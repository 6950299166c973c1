"""The skeleton the fake credential servers share (fake_entra, fake_gcp,
fake_oidc, fake_aws_credentials): an HTTP/1.1 server on a free loopback
port, on a thread of its own, whose answers a fake computes.

    class FakeThing(LoopbackServer):
        def __init__(self):
            super().__init__()             # self.port, self.url; close()

        def handle(self, method, path, headers, body):   # body: str
            return 200, "application/json", json.dumps({...})

`JsonServer` is the same for fakes that answer JSON objects: they define
`answer(method, path, headers, body)` -> (status, object) instead.
`IssuedTokens` answers which Bearer tokens a fake handed out are still
valid.
"""
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Answers the request methods in `methods` (others get the standard
    library's 501) with `self.handle(method, path, headers, body)`, which
    returns (status, content type, payload as str or bytes). With
    `tls=(cert.pem, key.pem)` it speaks HTTPS."""

    def __init__(self, methods=("GET", "POST"), tls=None):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                status, content_type, payload = fake.handle(self.command, self.path, self.headers, body)
                if isinstance(payload, str):
                    payload = payload.encode()
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        for method in methods:
            setattr(Handler, "do_" + method, Handler._handle)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, method, path, headers, body):
        raise NotImplementedError

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class JsonServer(LoopbackServer):
    """A LoopbackServer whose answers are `self.answer(method, path,
    headers, body)` -> (status, a JSON-serialisable object), sent with
    `content_type`."""

    def __init__(self, methods=("POST",), tls=None, content_type="application/json; charset=utf-8"):
        self.content_type = content_type
        super().__init__(methods=methods, tls=tls)

    def handle(self, method, path, headers, body):
        status, answer = self.answer(method, path, headers, body)
        return status, self.content_type, json.dumps(answer)

    def answer(self, method, path, headers, body):
        raise NotImplementedError


class IssuedTokens:
    """For a fake that keeps the tokens it handed out as (token,
    expires_at) in `self.issued` (or whatever `_live_tokens()` returns),
    guarded by `self._lock`."""

    def _live_tokens(self):
        return self.issued

    def _is_live(self, tokens, token):
        now = time.time()
        with self._lock:
            return any(t == token and now < exp for t, exp in tokens)

    def valid(self, authorization):
        """Whether `authorization` is `Bearer <a token issued and not expired>`."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return self._is_live(self._live_tokens(), authorization[len("Bearer "):])

    def tokens(self):
        with self._lock:
            return [t for t, _ in self._live_tokens()]
