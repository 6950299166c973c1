"""What the fake credential servers share (fake_entra, fake_gcp, fake_oidc,
fake_aws_credentials), on top of `fakes.LoopbackServer` (the loopback
HTTP server thread every fake runs):

    class FakeThing(TokenServer):
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
import time

from fakes import LoopbackServer


class TokenServer(LoopbackServer):
    """A LoopbackServer whose answers are `self.handle(method, path,
    headers, body)` (headers lowercased, body a str) -> (status, content
    type, payload as str or bytes)."""

    def serve(self, request):
        status, content_type, payload = self.handle(request.method, request.path, request.headers,
                                                    request.body.decode())
        if isinstance(payload, str):
            payload = payload.encode()
        return status, {"content-type": content_type}, payload

    def handle(self, method, path, headers, body):
        raise NotImplementedError


class JsonServer(TokenServer):
    """A TokenServer whose answers are `self.answer(method, path,
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
