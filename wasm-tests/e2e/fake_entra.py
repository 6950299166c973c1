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
import secrets
import threading
import time
import urllib.parse

from token_server import IssuedTokens, JsonServer

SCOPE = "https://cognitiveservices.azure.com/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class FakeEntra(JsonServer, IssuedTokens):
    def __init__(self, tenant, client_id, client_secret=None, assertion_ok=None, expires_in=3600):
        self.tenant, self.client_id = tenant, client_id
        self.client_secret, self.assertion_ok = client_secret, assertion_ok
        self.expires_in = expires_in
        self.failing = None
        self.issued = []       # (token, expires_at), in order
        self.refused = []      # why requests were refused
        self.forms = []        # the forms received
        self._lock = threading.Lock()
        super().__init__()

    def _refuse(self, why, status, error, description):
        self.refused.append(why)
        return status, {"error": error, "error_description": f"{description} Trace ID: {secrets.token_hex(8)}",
                        "error_codes": [int(description[6:description.index(":")])]}

    def answer(self, method, path, headers, body):
        content_type = headers.get("content-type", "")
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
