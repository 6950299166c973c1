"""A fake OIDC identity provider on loopback for the client credentials
grant: discovery at /.well-known/openid-configuration and a token endpoint
that checks the client's id and secret and hands out ID tokens (opaque
random JWT-looking strings). `issued` lists them; `valid(token)` says
whether it handed one out."""
import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOidcProvider:
    def __init__(self, client_id, client_secret, scope=None, audience=None):
        self.client_id, self.client_secret = client_id, client_secret
        self.scope, self.audience = scope, audience
        self.issued = []
        self.refused = []
        self.discoveries = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, answer):
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path != "/.well-known/openid-configuration":
                    return self._send(404, {"error": "not_found"})
                fake.discoveries += 1
                self._send(200, {"issuer": fake.issuer, "token_endpoint": fake.issuer + "/oauth2/token",
                                 "grant_types_supported": ["client_credentials"]})

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                if self.path != "/oauth2/token":
                    return self._send(404, {"error": "not_found"})
                if form.get("grant_type") != "client_credentials":
                    fake.refused.append("grant_type")
                    return self._send(400, {"error": "unsupported_grant_type"})
                if (form.get("client_id"), form.get("client_secret")) != (fake.client_id, fake.client_secret):
                    fake.refused.append("client")
                    return self._send(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
                if fake.scope and form.get("scope") != fake.scope:
                    fake.refused.append("scope")
                    return self._send(400, {"error": "invalid_scope"})
                if fake.audience and form.get("audience") != fake.audience:
                    fake.refused.append("audience")
                    return self._send(400, {"error": "invalid_request", "error_description": "audience"})
                token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(32) + ".sig"
                fake.issued.append(token)
                self._send(200, {"access_token": "opaque-" + secrets.token_hex(8), "id_token": token,
                                 "token_type": "Bearer", "expires_in": 300})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def valid(self, token):
        return token in self.issued

    def close(self):
        self.server.shutdown()
        self.server.server_close()
