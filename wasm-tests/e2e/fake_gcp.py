"""Fake Google Cloud endpoints on loopback, for GCPCredentials backends.

`FakeGoogleOAuth` is a Google OAuth2 token endpoint for service-account
keys (the JWT bearer grant, RFC 7523): it makes a fresh RSA key and the
service-account key file that names it, verifies each assertion's RS256
signature and claims with `cryptography`, and hands out access tokens that
expire after `expires_in` seconds. Reusable for any Vertex AI fake:

    oauth = FakeGoogleOAuth(expires_in=60)
    yaml = oauth.secret_yaml("gcp-sa")      # a Secret with service_account.json
    ...BackendSecurityPolicy type: GCPCredentials with
       credentialsFile: {secretRef: {name: gcp-sa}}...
    # in the fake provider:
    if not oauth.valid(request.headers.get("authorization")): answer 401
    oauth.close()

`oauth.failing = (status, body)` makes it refuse every request until set
back to None; `oauth.issued` lists the tokens handed out.

`vertex_anthropic(oauth)` is the respond function of a `FakeProvider` that
serves Claude on Vertex AI (rawPredict / streamRawPredict).
"""
import base64
import json
import re
import secrets
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fakes import anthropic_sse
from token_server import IssuedTokens, JsonServer

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_EMAIL = "aigw-test@test-project.iam.gserviceaccount.com"


def _b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGoogleOAuth(JsonServer, IssuedTokens):
    def __init__(self, expires_in=3600, client_email=CLIENT_EMAIL, tls=None):
        """`tls`: (server.pem, server-key.pem) for a certificate naming
        localhost: then the token_uri is https://localhost:PORT/token."""
        self.expires_in = expires_in
        self.client_email = client_email
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)
        self.failing = None
        self.issued = []          # (token, expires_at), in order
        self.requests = 0
        self.rejected = []        # why assertions were refused
        self._lock = threading.Lock()
        super().__init__(tls=tls)
        self.token_uri = (f"https://localhost:{self.port}/token" if tls
                          else f"http://127.0.0.1:{self.port}/token")

    # The key file and a Secret holding it.
    def private_key_pem(self):
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    def service_account_json(self):
        return json.dumps({
            "type": "service_account", "project_id": "test-project", "private_key_id": self.key_id,
            "private_key": self.private_key_pem(), "client_email": self.client_email,
            "client_id": "1234567890", "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        })

    def secret_yaml(self, name, namespace=None):
        meta = f"{{name: {name}" + (f", namespace: {namespace}" if namespace else "") + "}"
        return (f"apiVersion: v1\nkind: Secret\nmetadata: {meta}\nstringData:\n"
                f"  service_account.json: {json.dumps(self.service_account_json())}\n")

    def _refuse(self, why):
        self.rejected.append(why)
        return 400, {"error": "invalid_grant", "error_description": why}

    def answer(self, method, path, headers, body):
        content_type = headers.get("content-type", "")
        with self._lock:
            self.requests += 1
        if path != "/token":
            return 404, {"error": "not_found"}
        if self.failing:
            status, answer = self.failing
            return status, answer
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return 400, {"error": "invalid_request", "error_description": "not a form"}
        form = urllib.parse.parse_qs(body)
        if form.get("grant_type") != [GRANT]:
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
        jwt = (form.get("assertion") or [""])[0]
        parts = jwt.split(".")
        if len(parts) != 3:
            return self._refuse("Invalid JWT: not three parts")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError:
            return self._refuse("Invalid JWT: bad base64 or JSON")
        if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            return self._refuse(f"Invalid JWT header {header}")
        try:
            self.key.public_key().verify(signature, f"{parts[0]}.{parts[1]}".encode(),
                                         padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return self._refuse("Invalid JWT Signature.")
        now = time.time()
        if claims.get("iss") != self.client_email:
            return self._refuse(f"Invalid iss {claims.get('iss')}")
        if claims.get("scope") != SCOPE:
            return self._refuse(f"Invalid scope {claims.get('scope')}")
        if claims.get("aud") != self.token_uri:
            return self._refuse(f"Invalid aud {claims.get('aud')}")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or abs(iat - now) > 60 or exp - iat != 3600:
            return self._refuse(f"Invalid JWT: iat {iat} exp {exp}")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self._lock:
            self.issued.append((token, now + self.expires_in))
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}


VERTEX_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)"
                         r"/publishers/anthropic/models/(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)$")
TEXT = "Hello from Claude on Vertex"
USAGE = {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 0,
         "cache_creation_input_tokens": 0}


def google_error(code, status, message):
    return code, {"content-type": "application/json; charset=UTF-8"}, json.dumps(
        {"error": {"code": code, "message": message, "status": status}}).encode()


def vertex_anthropic(oauth, project="test-project", region="us-east5", host=None):
    """A respond function for `fakes.FakeProvider`: Claude on Vertex AI. It
    checks the path, the Bearer token (issued by `oauth`, not expired), the
    Host and the body (no `model`, `anthropic_version` present, `stream` as
    the method says), and answers in Anthropic's JSON or SSE."""

    def respond(request):
        if host and request.headers.get("host") != host:
            return google_error(404, "NOT_FOUND", f"wrong host {request.headers.get('host')}")
        m = VERTEX_PATH.match(request.path)
        if not m or request.method != "POST":
            return google_error(404, "NOT_FOUND", f"no such path {request.path}")
        if (m["project"], m["region"]) != (project, region):
            return google_error(403, "PERMISSION_DENIED", "wrong project or region")
        if not oauth.valid(request.headers.get("authorization")):
            return google_error(401, "UNAUTHENTICATED",
                                "Request had invalid authentication credentials. Expected OAuth 2 access token.")
        body = request.json()
        stream = m["method"] == "streamRawPredict"
        if "model" in body:
            return 400, {"content-type": "application/json"}, json.dumps(
                {"type": "error", "error": {"type": "invalid_request_error",
                                            "message": "model: Extra inputs are not permitted"}}).encode()
        if not body.get("anthropic_version"):
            return 400, {"content-type": "application/json"}, json.dumps(
                {"type": "error", "error": {"type": "invalid_request_error",
                                            "message": "anthropic_version: Field required"}}).encode()
        if bool(body.get("stream")) != stream:
            return 400, {"content-type": "application/json"}, json.dumps(
                {"type": "error", "error": {"type": "invalid_request_error",
                                            "message": "stream does not match the method"}}).encode()
        model = m["model"]
        if not stream:
            answer = {"id": "msg_vrtx_1", "type": "message", "role": "assistant", "model": model,
                      "content": [{"type": "text", "text": TEXT}], "stop_reason": "end_turn",
                      "stop_sequence": None, "usage": USAGE}
            return 200, {"content-type": "application/json"}, json.dumps(answer).encode()
        events = [
            {"type": "message_start", "message": {"id": "msg_vrtx_2", "type": "message", "role": "assistant",
                                                  "model": model, "content": [], "stop_reason": None,
                                                  "stop_sequence": None, "usage": {**USAGE, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": 5}},
            {"type": "message_stop"},
        ]
        return 200, {"content-type": "text/event-stream"}, anthropic_sse(events)

    return respond


class FakeGoogleSts(JsonServer, IssuedTokens):
    """Google's Security Token Service (`POST /v1/token`, RFC 8693 token
    exchange of an OIDC token from `oidc`, a FakeOidcProvider, for the
    workload identity pool provider `audience`) and the IAM Credentials API
    (`generateAccessToken` for `service_account`, called with a federated
    token) on one loopback server. Point aigw at it with
    AIGW_GCP_STS_ENDPOINT and AIGW_GCP_IAM_CREDENTIALS_ENDPOINT.
    `valid(authorization)` accepts the tokens a Vertex call may carry: the
    impersonated ones, or the federated ones when `service_account` is None."""

    def __init__(self, oidc, audience, service_account=None, expires_in=3600):
        self.oidc, self.audience, self.service_account = oidc, audience, service_account
        self.expires_in = expires_in
        self.federated, self.impersonated = [], []  # (token, expires_at)
        self.refused = []
        self._lock = threading.Lock()
        super().__init__()

    def _live_tokens(self):
        return self.impersonated if self.service_account else self.federated

    def _refuse(self, status, error, description):
        self.refused.append(description)
        return status, {"error": error, "error_description": description}

    def answer(self, method, path, headers, body):
        now = time.time()
        if path == "/v1/token":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
                return self._refuse(400, "unsupported_grant_type", "grant_type")
            if form.get("audience") != self.audience:
                return self._refuse(400, "invalid_target", "The target service indicated by the audience parameters is invalid.")
            if form.get("scope") != SCOPE or form.get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token":
                return self._refuse(400, "invalid_request", "scope or requested_token_type")
            if form.get("subject_token_type") not in ("urn:ietf:params:oauth:token-type:jwt",
                                                      "urn:ietf:params:oauth:token-type:id_token"):
                return self._refuse(400, "invalid_request", "subject_token_type")
            if not self.oidc.valid(form.get("subject_token")):
                return self._refuse(400, "invalid_grant", "The ID Token is not valid.")
            token = "ya29.federated-" + secrets.token_urlsafe(16)
            with self._lock:
                self.federated.append((token, now + self.expires_in))
            return 200, {"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                         "token_type": "Bearer", "expires_in": self.expires_in}
        m = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken", path)
        if not m:
            return 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}
        if m[1] != self.service_account:
            return 403, {"error": {"code": 403, "message": f"Permission denied on {m[1]}", "status": "PERMISSION_DENIED"}}
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not self._is_live(self.federated, auth[len("Bearer "):]):
            return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                   "status": "UNAUTHENTICATED"}}
        if json.loads(body or "{}").get("scope") != [SCOPE]:
            return 400, {"error": {"code": 400, "message": "scope", "status": "INVALID_ARGUMENT"}}
        token = "ya29.impersonated-" + secrets.token_urlsafe(16)
        expires = int(now) + self.expires_in
        with self._lock:
            self.impersonated.append((token, expires))
        return 200, {"accessToken": token, "expireTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}
