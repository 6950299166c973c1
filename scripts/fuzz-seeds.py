#!/usr/bin/env python3
"""Writes seed inputs for the filter's fuzz targets from the shared
conformance data (recorded OpenAI traffic, AWS event-stream frames, the
SigV4 suite's requests): fuzzing a few seconds per target in CI starts from
real requests and answers instead of random bytes. Usage: fuzz-seeds.py OUT
(one folder per target below OUT)."""
import glob
import gzip
import hashlib
import os
import sys
import zlib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFORMANCE = os.path.join(os.path.dirname(ROOT), "shared", "conformance")
# request.rs: endpoint = selector % 5, schema = (selector >> 4) % 7.
ENDPOINTS = {"/v1/chat/completions": 0, "/v1/completions": 1, "/v1/embeddings": 2}
SCHEMAS = 7


def write(out, target, data):
    folder = os.path.join(out, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def cassette_exchanges():
    for path in sorted(glob.glob(os.path.join(CONFORMANCE, "openai-cassettes", "*.yaml"))):
        with open(path) as f:
            doc = yaml.safe_load(f)
        for i in doc.get("interactions", []):
            request, response = i.get("request", {}), i.get("response", {})
            path = "/" + request.get("url", "").split("://", 1)[-1].split("/", 1)[-1]
            yield path, (request.get("body") or "").encode(), (response.get("body") or "").encode()


def main(out):
    count = 0
    for path, request, response in cassette_exchanges():
        endpoint = ENDPOINTS.get(path)
        if endpoint is not None and request:
            for schema in range(SCHEMAS):
                write(out, "request", bytes([endpoint | schema << 4]) + request)
            count += SCHEMAS
            if endpoint == 0:
                write(out, "chat_request", request)
                count += 1
        if response:
            for cut in (7, 200):
                write(out, "openai_stream", bytes([cut]) + response)
            # provider_answer.rs: coding = selector & 3 (gzip, deflate), piece size = selector >> 2.
            write(out, "provider_answer", bytes([0 | 16 << 2]) + gzip.compress(response))
            write(out, "provider_answer", bytes([1 | 5 << 2]) + zlib.compress(response))
            write(out, "provider_answer", bytes([3]) + response)
            count += 5
    frames = []
    for path in sorted(glob.glob(os.path.join(CONFORMANCE, "eventstream", "*"))):
        with open(path, "rb") as f:
            frame = f.read()
        frames.append(frame)
        write(out, "eventstream", bytes([len(frame) // 2]) + frame)
        count += 1
    write(out, "eventstream", bytes([40]) + b"".join(frames))
    for path in sorted(glob.glob(os.path.join(CONFORMANCE, "sigv4-v4", "*", "request.txt"))):
        with open(path, "rb") as f:
            line = f.readline().split(b" ")
        if len(line) >= 2:
            write(out, "sigv4", line[1])
            count += 1
    print(f"fuzz seeds: {count} inputs from {CONFORMANCE}")


if __name__ == "__main__":
    if not os.path.isdir(CONFORMANCE):
        sys.exit(f"no conformance data at {CONFORMANCE}: the shared folder must sit beside the repository")
    main(sys.argv[1])
