"""A fake OIDC identity provider on loopback for the client credentials
grant: discovery at /.well-known/openid-configuration and a token endpoint
that checks the client's id and secret and hands out ID tokens (opaque
random JWT-looking strings). `issued` lists them; `valid(token)` says
whether it handed one out."""
import secrets
import urllib.parse

from token_server import JsonServer


class FakeOidcProvider(JsonServer):
    def __init__(self, client_id, client_secret, scope=None, audience=None):
        self.client_id, self.client_secret = client_id, client_secret
        self.scope, self.audience = scope, audience
        self.issued = []
        self.refused = []
        self.discoveries = 0
        super().__init__(methods=("GET", "POST"), content_type="application/json")
        self.issuer = self.url

    def answer(self, method, path, headers, body):
        if method == "GET":
            if path != "/.well-known/openid-configuration":
                return 404, {"error": "not_found"}
            self.discoveries += 1
            return 200, {"issuer": self.issuer, "token_endpoint": self.issuer + "/oauth2/token",
                         "grant_types_supported": ["client_credentials"]}
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
        if path != "/oauth2/token":
            return 404, {"error": "not_found"}
        if form.get("grant_type") != "client_credentials":
            self.refused.append("grant_type")
            return 400, {"error": "unsupported_grant_type"}
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            self.refused.append("client")
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        if self.scope and form.get("scope") != self.scope:
            self.refused.append("scope")
            return 400, {"error": "invalid_scope"}
        if self.audience and form.get("audience") != self.audience:
            self.refused.append("audience")
            return 400, {"error": "invalid_request", "error_description": "audience"}
        token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(32) + ".sig"
        self.issued.append(token)
        return 200, {"access_token": "opaque-" + secrets.token_hex(8), "id_token": token,
                     "token_type": "Bearer", "expires_in": 300}

    def valid(self, token):
        return token in self.issued
