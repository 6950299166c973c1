"""A fake AWS Bedrock runtime over TLS: checks every request's SigV4
signature independently with botocore, like Bedrock answers a bad one with
403, and answers InvokeModel (Anthropic Messages JSON) and
InvokeModelWithResponseStream (binary event-stream frames), Converse and
ConverseStream (with a tool call when tools are offered and no tool result
came back yet)."""
import base64
import datetime
import json
import os
import re
import struct
import zlib
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fakes import LoopbackServer

HOST = "bedrock-runtime.us-west-2.amazonaws.com"
AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$")


def make_test_ca(directory, hostname=HOST):
    """A CA and a server certificate for `hostname` signed by it, as PEM
    files in `directory`: returns (ca.pem, server.pem, server-key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aigw test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server-key.pem")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def frame(headers, payload):
    """One event-stream message: prelude, string headers, payload, CRCs."""
    hb = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        hb += bytes([len(n)]) + n + bytes([7]) + struct.pack(">H", len(v)) + v
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + hb + payload
    return message + struct.pack(">I", zlib.crc32(message))


def converse_frame(event_type, event):
    """One ConverseStream event: the event's JSON is the payload."""
    return frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps({**event, "p": "abcdef"}).encode())


def chunk_frame(event):
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abcdef"})
    return frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                 payload.encode())


class FakeBedrock(LoopbackServer):
    def __init__(self, cert, key, access_key, secret_key, session_token=None, text="Hello from Bedrock",
                 usage=(13, 8)):
        self.credentials = Credentials(access_key, secret_key, session_token)
        self.text = text
        self.usage = usage
        self.requests = []
        self.counted = []  # count-tokens InvokeModel bodies, decoded
        self.signature_checks = []  # (ok, reason) per request
        super().__init__(methods=("POST",), tls=(cert, key))

    def serve(self, request):
        self.requests.append(request)
        ok, reason = self.verify(request)
        self.signature_checks.append((ok, reason))
        if not ok:
            return 403, {"content-type": "application/json", "x-amzn-errortype": "InvalidSignatureException"}, \
                json.dumps({"message": "The request signature we calculated does not match "
                                       "the signature you provided. " + reason}).encode()
        m = re.fullmatch(r"/model/([^/]+)/(invoke|invoke-with-response-stream|converse|converse-stream|count-tokens)",
                         request.path)
        if not m:
            return 404, {"content-type": "application/json"}, b'{"message":"Unknown operation"}'
        model = unquote(m.group(1))
        if m.group(2) == "count-tokens":
            return self.count_tokens(model, request.json())
        if m.group(2) == "invoke" and (model.startswith("amazon.titan-embed") or model.startswith("cohere.embed")):
            return self.embed(model, request.json())
        if m.group(2) == "invoke":
            return 200, {"content-type": "application/json"}, json.dumps(self.message(model)).encode()
        if m.group(2) == "converse":
            return 200, {"content-type": "application/json",
                         "x-amzn-requestid": "2b6a0a6e-1111-4a2b-9c3d-000000000001"}, \
                json.dumps(self.converse(request.json())).encode()
        frames = (self.stream_frames(model) if m.group(2) == "invoke-with-response-stream"
                  else self.converse_frames(request.json()))
        return 200, {"content-type": "application/vnd.amazon.eventstream"}, frames

    def verify(self, request):
        """Recomputes the signature with botocore from what arrived."""
        h = request.headers
        m = AUTH_RE.match(h.get("authorization", ""))
        if not m:
            return False, "no SigV4 authorization header"
        if m["akid"] != self.credentials.access_key:
            return False, "unknown access key"
        if m["service"] != "bedrock" or m["region"] != "us-west-2":
            return False, f"wrong scope {m['region']}/{m['service']}"
        signed = m["signed"].split(";")
        for required in ("host", "x-amz-date"):
            if required not in signed:
                return False, f"{required} is not signed"
        if self.credentials.token and h.get("x-amz-security-token") != self.credentials.token:
            return False, "missing session token"
        amz_date = h.get("x-amz-date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return False, "bad x-amz-date"
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
            return False, "request time too skewed"
        headers = {name: h.get(name, "") for name in signed}
        aws = AWSRequest(method=request.method, url=f"https://{h.get('host', '')}{request.path}",
                         data=request.body, headers=headers)
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(self.credentials, "bedrock", "us-west-2")
        canonical = signer.canonical_request(aws)
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        if expected != m["signature"]:
            return False, "signature mismatch"
        return True, "ok"

    # Vectors of floats exact in f32, so base64 round trips compare equal.
    VECTOR = [0.5, -0.25, 0.125, 1.0]

    def vector(self, size, seed):
        return [self.VECTOR[(i + seed) % 4] for i in range(size)]

    def embed(self, model, body):
        """InvokeModel for Amazon Titan and Cohere Embed: their real request
        checks (as far as the tests need) and answer shapes, with Bedrock's
        input token count header."""
        json_ct = {"content-type": "application/json"}
        if model.startswith("amazon.titan-embed"):
            text = body.get("inputText")
            if not isinstance(text, str) or set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}:
                return 400, json_ct, json.dumps({"message": "Malformed input request: extraneous key"}).encode()
            if text == "fail please":
                return 400, json_ct, json.dumps(
                    {"message": "Malformed input request: #/inputText: expected maxLength: 50000"}).encode()
            tokens = len(text.split())
            answer = {"embedding": self.vector(body.get("dimensions", 1024), 0), "inputTextTokenCount": tokens}
            return 200, {**json_ct, "x-amzn-bedrock-input-token-count": str(tokens)}, json.dumps(answer).encode()
        texts = body.get("texts")
        if not isinstance(texts, list) or body.get("input_type") not in (
                "search_document", "search_query", "classification", "clustering"):
            return 400, json_ct, json.dumps({"message": "Malformed input request: texts and input_type"}).encode()
        tokens = sum(len(t.split()) for t in texts)
        vectors = [self.vector(8, i) for i in range(len(texts))]
        answer = {"id": "emb-1", "texts": texts,
                  **({"embeddings": {"float": vectors}, "response_type": "embeddings_by_type"}
                     if body.get("embedding_types") else
                     {"embeddings": vectors, "response_type": "embeddings_floats"})}
        return 200, {**json_ct, "x-amzn-bedrock-input-token-count": str(tokens)}, json.dumps(answer).encode()

    def count_tokens(self, model, body):
        """CountTokens: {"input":{"invokeModel":{"body": base64}}} ->
        {"inputTokens": N}; Bedrock refuses inference profile ids."""
        json_ct = {"content-type": "application/json"}
        if not model.startswith("anthropic."):
            return 400, json_ct, b'{"message":"The provided model doesn\'t support counting tokens."}'
        try:
            inner = json.loads(base64.b64decode(body["input"]["invokeModel"]["body"], validate=True))
        except (KeyError, TypeError, ValueError):
            return 400, json_ct, b'{"message":"Malformed input request"}'
        self.counted.append(inner)
        if "anthropic_version" not in inner or "model" in inner or "max_tokens" not in inner:
            return 400, json_ct, b'{"message":"Malformed input request: anthropic_version, max_tokens"}'
        if "fail please" in json.dumps(inner):
            return 400, {**json_ct, "x-amzn-errortype": "ValidationException"}, \
                b'{"message":"messages.0.content: text content blocks must be non-empty"}'
        words = sum(len(json.dumps(m["content"]).split()) for m in inner["messages"])
        return 200, json_ct, json.dumps({"inputTokens": 10 + words}).encode()

    def message(self, model):
        return {"id": "msg_bdrk_01", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": self.text}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": self.usage[0], "output_tokens": self.usage[1]}}

    def stream_frames(self, model):
        words = self.text.split(" ")
        events = [
            {"type": "message_start", "message": {
                "id": "msg_bdrk_02", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": self.usage[0], "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ]
        for i, w in enumerate(words):
            events.append({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": w if i == 0 else " " + w}})
        events += [
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": self.usage[1]}},
            {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": self.usage[0], "outputTokenCount": self.usage[1],
                "invocationLatency": 100, "firstByteLatency": 50}},
        ]
        return [chunk_frame(e) for e in events]

    def converse_plan(self, body):
        """What Converse answers: a tool call (text first) when tools are
        offered and the last turn holds no tool result, else text."""
        last = body["messages"][-1]["content"]
        results = [c["toolResult"] for c in last if "toolResult" in c]
        tools = (body.get("toolConfig") or {}).get("tools") or []
        if tools and not results:
            name = tools[0]["toolSpec"]["name"]
            return "Let me check.", {"toolUseId": "tooluse_bdrk_1", "name": name, "input": {"city": "Paris"}}
        if results:
            return "Tool said: " + results[0]["content"][0]["text"], None
        return self.text, None

    def converse_usage(self):
        return {"inputTokens": self.usage[0], "outputTokens": self.usage[1],
                "totalTokens": self.usage[0] + self.usage[1]}

    def converse(self, body):
        text, tool = self.converse_plan(body)
        content = [{"text": text}] + ([{"toolUse": tool}] if tool else [])
        return {"output": {"message": {"role": "assistant", "content": content}},
                "stopReason": "tool_use" if tool else "end_turn",
                "usage": self.converse_usage(), "metrics": {"latencyMs": 120}}

    def converse_frames(self, body):
        text, tool = self.converse_plan(body)
        frames = [converse_frame("messageStart", {"role": "assistant"})]
        for i, w in enumerate(text.split(" ")):
            frames.append(converse_frame("contentBlockDelta", {
                "contentBlockIndex": 0, "delta": {"text": w if i == 0 else " " + w}}))
        frames.append(converse_frame("contentBlockStop", {"contentBlockIndex": 0}))
        if tool:
            frames.append(converse_frame("contentBlockStart", {"contentBlockIndex": 1, "start": {
                "toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}}))
            arguments = json.dumps(tool["input"])
            for piece in (arguments[:5], arguments[5:]):
                frames.append(converse_frame("contentBlockDelta", {
                    "contentBlockIndex": 1, "delta": {"toolUse": {"input": piece}}}))
            frames.append(converse_frame("contentBlockStop", {"contentBlockIndex": 1}))
        frames.append(converse_frame("messageStop", {"stopReason": "tool_use" if tool else "end_turn"}))
        frames.append(converse_frame("metadata", {"usage": self.converse_usage(),
                                                  "metrics": {"latencyMs": 120}}))
        return frames
