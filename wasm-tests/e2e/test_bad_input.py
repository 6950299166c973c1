"""A bad-input corpus through a real Envoy: each gets the right error in the
client's API shape, and the gateway keeps serving the next good request."""
import json
import socket
import subprocess

import pytest

from conftest import basic_config, write_yaml
from test_openai import post

GOOD = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    from conftest import Gateway
    from fakes import FakeProvider
    provider = FakeProvider(name="p")
    path = write_yaml(tmp_path_factory.mktemp("bad"), "gw.yaml", basic_config(provider.port))
    g = Gateway([path])
    yield g
    g.close()
    provider.close()


def still_serving(gw):
    status, _, body = post(gw.url + "/v1/chat/completions", GOOD)
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "p answered test-model"


def nested(depth):
    return b'{"model":"test-model","x":' + b"[" * depth + b"]" * depth + b"}"


CORPUS = [
    ("truncated", b'{"model": "test-model", "messages": [', 400, "invalid_json"),
    ("empty", b"", 400, None),
    ("not an object", b'"test-model"', 400, "invalid_json"),
    ("model wrong type", b'{"model": ["test-model"]}', 400, "invalid_type"),
    ("stream wrong type", b'{"model": "test-model", "stream": "yes"}', 400, "invalid_type"),
    ("invalid utf-8", b'{"model": "test-\xff\xfe"}', 400, "invalid_json"),
    ("deeply nested", nested(10000), 400, "invalid_json"),
    ("control characters in model", b'{"model": "a\\r\\nx-evil: 1"}', 400, "invalid_model"),
    ("huge unknown model", json.dumps({"model": "m" * 500_000}).encode(), 404, "model_not_found"),
    ("over the body limit", json.dumps({"model": "test-model", "pad": "x" * (1 << 21)}).encode(), 413,
     "request_too_large"),
]


@pytest.mark.parametrize("name,body,status,code", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_body(gw, name, body, status, code):
    got, headers, raw = post(gw.url + "/v1/chat/completions", body)
    assert got == status, raw[:300]
    assert headers.get("content-type", headers.get("Content-Type")) == "application/json"
    error = json.loads(raw)["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    still_serving(gw)


def test_a_key_given_twice_is_refused(gw):
    # Parsers disagree on which duplicate wins: the gateway could route by one
    # model while the provider serves another.
    status, _, raw = post(gw.url + "/v1/chat/completions", b'{"model": "nope", "model": "test-model"}')
    assert status == 400
    assert b"duplicate field" in raw
    still_serving(gw)


def test_wrong_content_type_is_still_parsed_as_json(gw):
    status, _, _ = post(gw.url + "/v1/chat/completions", json.dumps(GOOD).encode(),
                        {"content-type": "text/plain"})
    assert status == 200


def test_anthropic_path_errors_in_anthropic_shape(gw):
    status, _, raw = post(gw.url + "/anthropic/v1/messages", b"{")
    assert status == 400
    body = json.loads(raw)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_unknown_path_is_404_in_openai_shape(gw):
    status, _, raw = post(gw.url + "/v1/nothing-here", GOOD)
    assert status == 404
    assert "not an endpoint" in json.loads(raw)["error"]["message"]


def test_http2_client(gw):
    out = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-H", "content-type: application/json",
         "-d", json.dumps(GOOD), "-w", "\n%{http_version} %{http_code}", gw.url + "/v1/chat/completions"],
        capture_output=True, text=True, timeout=20, check=True)
    body, _, meta = out.stdout.rpartition("\n")
    assert meta == "2 200"
    assert json.loads(body)["choices"][0]["message"]["content"] == "p answered test-model"


def test_oversized_headers_are_refused_and_serving_continues(gw):
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 200_000
                  + b"\r\ncontent-length: 2\r\n\r\n{}")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_headers_too_large", body
    still_serving(gw)


def test_client_that_disconnects_mid_body(gw):
    host, port = gw.url.removeprefix("http://").split(":")
    for _ in range(20):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"model\"")
    still_serving(gw)
