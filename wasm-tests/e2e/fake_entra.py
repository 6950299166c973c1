"""A fake Microsoft Entra ID v2.0 token endpoint on loopback, for
AzureCredentials backends: POST /{tenant}/oauth2/v2.0/token with the client
credentials grant, checking the tenant, the client id, the scope
(https://cognitiveservices.azure.com/.default) and the client's proof: its
client secret, or a federated client assertion (a JWT bearer assertion that
`assertion_ok(token)` accepts, e.g. one the fake OIDC provider issued). It
answers like Entra ID (token_type, expires_in, ext_expires_in, access_token;
errors with an AADSTS code) and hands out tokens that expire after
`expires_in` seconds.

    entra = FakeEntra("tenant-guid", "app-id", client_secret="s")
    # AIGW_AZURE_AUTHORITY=entra.url
    # in the fake Azure: entra.valid(request.headers.get("authorization"))

`entra.failing = (status, body)` refuses every request until set back to
None; `entra.refused` lists why requests were refused.
"""
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCOPE = "https://cognitiveservices.azure.com/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class FakeEntra:
    def __init__(self, tenant, client_id, client_secret=None, assertion_ok=None, expires_in=3600):
        self.tenant, self.client_id = tenant, client_id
        self.client_secret, self.assertion_ok = client_secret, assertion_ok
        self.expires_in = expires_in
        self.failing = None
        self.issued = []       # (token, expires_at), in order
        self.refused = []      # why requests were refused
        self.forms = []        # the forms received
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode()
                status, answer = fake._answer(self.path, self.headers.get("content-type", ""), body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _refuse(self, why, status, error, description):
        self.refused.append(why)
        return status, {"error": error, "error_description": f"{description} Trace ID: {secrets.token_hex(8)}",
                        "error_codes": [int(description[6:description.index(":")])]}

    def _answer(self, path, content_type, body):
        if self.failing:
            return self.failing
        if path != f"/{self.tenant}/oauth2/v2.0/token":
            return self._refuse("path", 400, "invalid_request",
                                "AADSTS900144: tenant or path not found.")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return self._refuse("content-type", 400, "invalid_request", "AADSTS900144: not a form.")
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}
        with self._lock:
            self.forms.append(form)
        if form.get("grant_type") != "client_credentials":
            return self._refuse("grant_type", 400, "unsupported_grant_type",
                                "AADSTS70003: The app requested an unsupported grant type.")
        if form.get("client_id") != self.client_id:
            return self._refuse("client_id", 400, "unauthorized_client",
                                "AADSTS700016: Application not found in the directory.")
        if form.get("scope") != SCOPE:
            return self._refuse("scope", 400, "invalid_scope",
                                "AADSTS70011: The provided value for the input parameter 'scope' is not valid.")
        if self.client_secret is not None:
            if "client_assertion" in form or form.get("client_secret") != self.client_secret:
                return self._refuse("client_secret", 401, "invalid_client",
                                    "AADSTS7000215: Invalid client secret provided.")
        else:
            if "client_secret" in form or form.get("client_assertion_type") != ASSERTION_TYPE \
                    or not self.assertion_ok(form.get("client_assertion")):
                return self._refuse("client_assertion", 401, "invalid_client",
                                    "AADSTS700211: No matching federated identity record found for presented assertion.")
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-" + secrets.token_urlsafe(24) + ".sig"
        with self._lock:
            self.issued.append((token, time.time() + self.expires_in))
        return 200, {"token_type": "Bearer", "expires_in": self.expires_in,
                     "ext_expires_in": self.expires_in, "access_token": token}

    def valid(self, authorization):
        """Whether `authorization` is `Bearer <a token issued and not expired>`."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        token = authorization[len("Bearer "):]
        now = time.time()
        with self._lock:
            return any(t == token and now < exp for t, exp in self.issued)

    def tokens(self):
        with self._lock:
            return [t for t, _ in self.issued]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
