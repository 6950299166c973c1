"""Fake providers on loopback that speak the exact wire formats and record
every request they receive."""
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorded:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self):
        return json.loads(self.body)


class LoopbackServer:
    """An HTTP/1.1 server on a free 127.0.0.1 port, on a thread of its own,
    that answers the request methods in `methods` (others get the standard
    library's 501) with `self.serve(request)`, a `Recorded`, which returns
    (status, headers, body) where body is bytes or a list of byte chunks
    sent one by one (for streams). With `tls=(cert.pem, key.pem)` it speaks
    HTTPS."""

    def __init__(self, methods=("GET", "POST"), tls=None):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = fake.serve(Recorded(self.command, self.path, dict(self.headers), body))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if isinstance(payload, (bytes, bytearray)):
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                else:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for chunk in payload:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")

        for method in methods:
            setattr(Handler, "do_" + method, Handler._handle)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, request):
        raise NotImplementedError

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeProvider(LoopbackServer):
    """A LoopbackServer whose answer is computed by `respond(request)` and
    that records every request in `requests`."""

    def __init__(self, respond=None, name="fake", tls=None):
        self.name = name
        self.requests = []
        self.respond = respond or openai_echo(name)
        super().__init__(tls=tls)

    def serve(self, request):
        self.requests.append(request)
        return self.respond(request)


def openai_echo(name):
    """An OpenAI-compatible chat backend that names itself in its answer."""

    def respond(request):
        try:
            body = request.json()
        except ValueError:
            return 400, {"content-type": "application/json"}, b'{"error":{"message":"bad json"}}'
        model = body.get("model", "")
        text = f"{name} answered {model}"
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                 "prompt_tokens_details": {"cached_tokens": 2},
                 "completion_tokens_details": {"reasoning_tokens": 3}}
        if body.get("stream"):
            chunks = []
            for i, word in enumerate(text.split(" ")):
                piece = word if i == 0 else " " + word
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                chunks.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            final = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            chunks.append(b"data: " + json.dumps(final).encode() + b"\n\n")
            if (body.get("stream_options") or {}).get("include_usage"):
                u = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                     "choices": [], "usage": usage}
                chunks.append(b"data: " + json.dumps(u).encode() + b"\n\n")
            chunks.append(b"data: [DONE]\n\n")
            return 200, {"content-type": "text/event-stream"}, chunks
        answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": "stop"}],
                  "usage": usage}
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()

    return respond


def anthropic_sse(events):
    """Anthropic Messages stream events as SSE byte chunks, one per event."""
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]
