"""Fake AWS credential sources on loopback, handing out short-lived keys:
STS AssumeRoleWithWebIdentity (query protocol, XML answer) and the
container credentials endpoint (EKS Pod Identity / ECS, JSON answer), plus
a FakeBedrock that accepts any key they issued until it expires."""
import datetime
import json
import secrets
import threading
import time
import urllib.parse

from botocore.credentials import Credentials

from fake_bedrock import AUTH_RE, FakeBedrock
from token_server import TokenServer


def iso(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Issuer:
    """Short-lived AWS credentials: issues them and answers which are valid."""

    def __init__(self, lifetime):
        self.lifetime = lifetime
        self.issued = {}  # access key id -> (Credentials, expires_at)
        self.order = []
        self.lock = threading.Lock()

    def issue(self):
        akid = "ASIA" + secrets.token_hex(8).upper()
        creds = Credentials(akid, secrets.token_urlsafe(30), "IQoJb3JpZ2lu" + secrets.token_urlsafe(60))
        expires = int(time.time()) + self.lifetime
        with self.lock:
            self.issued[akid] = (creds, expires)
            self.order.append(akid)
        return creds, expires

    def lookup(self, akid):
        with self.lock:
            return self.issued.get(akid)

    def secret_values(self):
        """Every secret value handed out (for leak checks)."""
        with self.lock:
            return [v for c, _ in self.issued.values() for v in (c.secret_key, c.token)]


class FakeSts(TokenServer):
    """STS AssumeRoleWithWebIdentity: checks the role and the web identity
    token (`expected_token`, changeable to simulate rotation, or any token
    `accept(token)` approves when given)."""

    def __init__(self, issuer, role_arn, expected_token, accept=None):
        self.issuer, self.role_arn, self.expected_token = issuer, role_arn, expected_token
        self.accept = accept or (lambda token: token == self.expected_token)
        self.calls = []
        super().__init__()

    def _error(self, status, code, message):
        return status, "text/xml", (
            f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>")

    def handle(self, method, path, headers, body):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
        self.calls.append(form)
        if method != "POST" or form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15":
            return self._error(400, "InvalidAction", "Could not find operation")
        if "authorization" in {k.lower() for k in headers.keys()}:
            return self._error(400, "InvalidRequest", "AssumeRoleWithWebIdentity is not signed")
        if form.get("RoleArn") != self.role_arn:
            return self._error(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        if not self.accept(form.get("WebIdentityToken")):
            return self._error(400, "InvalidIdentityToken", "Incorrect token audience")
        if not form.get("RoleSessionName"):
            return self._error(400, "ValidationError", "RoleSessionName is required")
        creds, expires = self.issuer.issue()
        return 200, "text/xml", f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>{creds.access_key}</AccessKeyId>
      <SecretAccessKey>{creds.secret_key}</SecretAccessKey>
      <SessionToken>{creds.token}</SessionToken>
      <Expiration>{iso(expires)}</Expiration>
    </Credentials>
    <AssumedRoleUser><Arn>{self.role_arn}/{form['RoleSessionName']}</Arn><AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""


class FakeContainerCredentials(TokenServer):
    """The container credentials endpoint: GET with the authorization token."""

    def __init__(self, issuer, token, path="/v1/credentials"):
        self.issuer, self.token, self.path = issuer, token, path
        self.calls = 0
        super().__init__()

    def handle(self, method, path, headers, body):
        self.calls += 1
        if method != "GET" or path != self.path:
            return 404, "application/json", json.dumps({"Code": "NotFound", "Message": path})
        if headers.get("authorization") != self.token:
            return 401, "application/json", json.dumps({"Code": "AccessDenied", "Message": "bad token"})
        creds, expires = self.issuer.issue()
        return 200, "application/json", json.dumps({
            "AccessKeyId": creds.access_key, "SecretAccessKey": creds.secret_key, "Token": creds.token,
            "AccountId": "123456789012", "Expiration": iso(expires)})


class RotatingBedrock(FakeBedrock):
    """A FakeBedrock that accepts any unexpired key `issuer` handed out (the
    SigV4 check itself is FakeBedrock's, with botocore) and records which."""

    def __init__(self, cert, key, issuer, **kwargs):
        super().__init__(cert, key, "none", "none", **kwargs)
        self.issuer = issuer
        self.used = []  # access key id per request
        self._verify_lock = threading.Lock()

    def verify(self, request):
        m = AUTH_RE.match(request.headers.get("authorization", ""))
        if not m:
            return False, "no SigV4 authorization header"
        found = self.issuer.lookup(m["akid"])
        if not found:
            return False, "unknown access key"
        creds, expires = found
        if time.time() >= expires:
            return False, "expired token"
        with self._verify_lock:
            self.credentials = creds
            self.used.append(m["akid"])
            return super().verify(request)
