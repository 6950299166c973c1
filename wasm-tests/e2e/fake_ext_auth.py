"""Fake external authorization services (Envoy ext_authz) on loopback that
record every check they are asked.

Both decide the same way: `authorization: Bearer team-<user>` is allowed and
answered with `x-user-id: <user>`; `Bearer forbidden-<anything>` is refused
with 403; `Bearer throttled-<anything>` with 429; anything else with 401.

* FakeHttpAuth: the HTTP protocol (any status but 200 refuses; the check
  carries the client's path after the configured prefix).
* FakeGrpcAuth: envoy.service.auth.v3.Authorization/Check over gRPC
  (grpcio), its protobuf messages encoded by hand for the few fields used.
"""
from concurrent import futures

from fakes import FakeProvider


def decide(headers):
    """(status, user) for the request headers (lower-case names)."""
    token = headers.get("authorization", "")
    if token.startswith("Bearer team-"):
        return 200, token[len("Bearer team-"):]
    if token.startswith("Bearer forbidden-"):
        return 403, None
    if token.startswith("Bearer throttled-"):
        return 429, None
    return 401, None


class FakeHttpAuth:
    """With `tls=(cert.pem, key.pem)` it speaks HTTPS."""

    def __init__(self, status_override=None, tls=None):
        self.status_override = status_override

        def respond(request):
            if self.status_override:
                return self.status_override, {"content-type": "text/plain"}, b"auth service trouble"
            status, user = decide(request.headers)
            if status == 200:
                return 200, {"x-user-id": user, "x-not-forwarded": "1"}, b""
            return status, {"content-type": "text/plain", "www-authenticate": "Bearer realm=aigw",
                            "x-auth-reason": "test"}, b"denied by the fake: secret-detail"

        self.server = FakeProvider(respond, name="authz", tls=tls)
        self.port = self.server.port
        self.requests = self.server.requests

    def close(self):
        self.server.close()


# --- protobuf wire format, just enough for CheckRequest / CheckResponse ----

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number, value):
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    if isinstance(value, str):
        value = value.encode()
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _read_varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def parse(data):
    """field number -> list of values (int for varints, bytes otherwise)."""
    fields = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


class Check:
    """What one CheckRequest carried: AttributeContext.request.http."""

    def __init__(self, data):
        attributes = parse(parse(data)[1][0])
        http = parse(parse(attributes[4][0])[2][0])
        one = lambda n: http[n][0].decode() if n in http else ""  # noqa: E731
        self.method, self.path, self.host = one(2), one(4), one(5)
        self.body = one(11)
        self.headers = {}
        for entry in http.get(3, []):
            kv = parse(entry)
            self.headers[kv[1][0].decode()] = kv[2][0].decode() if 2 in kv else ""


def _header(key, value):
    return _field(1, _field(1, key) + _field(2, value))


def check_response(status, user):
    if status == 200:
        ok = _header("x-user-id", user)  # OkHttpResponse.headers (2)
        return _field(1, _field(1, 0)) + _field(3, _field(2, ok))
    denied = _field(1, _field(1, status)) + _field(3, "denied by the fake: secret-detail")
    return _field(1, _field(1, 7 if status == 403 else 16)) + _field(2, denied)


class FakeGrpcAuth:
    """With `tls=(cert.pem, key.pem)` it speaks gRPC over TLS."""

    def __init__(self, tls=None):
        import grpc

        self.requests = []

        def check(request, context):
            seen = Check(request)
            self.requests.append(seen)
            return check_response(*decide(seen.headers))

        handler = grpc.method_handlers_generic_handler(
            "envoy.service.auth.v3.Authorization",
            {"Check": grpc.unary_unary_rpc_method_handler(check)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        if tls:
            with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
                credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(0)
