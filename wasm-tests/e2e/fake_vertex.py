"""A fake Vertex AI Gemini endpoint on loopback that speaks the exact wire
format: generateContent JSON and streamGenerateContent?alt=sse, Google error
bodies, and Vertex's strictness about field names (an unknown field is a 400
INVALID_ARGUMENT, as the real service answers). It checks the path (project,
location, publisher, model, method), the Bearer access token and the body's
shape, and records every request."""
import json
import re

from fakes import FakeProvider

PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
                  r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)"
                  r"(?P<query>\?.*)?$")

TOP_LEVEL = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
             "cachedContent", "labels"}
GENERATION_CONFIG = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
                     "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
                     "responseJsonSchema", "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities"}
PART = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "thought", "thoughtSignature"}
FUNCTION_DECLARATION = {"name", "description", "parameters", "parametersJsonSchema", "response",
                        "responseJsonSchema"}

# Usage the fake reports: prompt 21 (4 of them cached), answer 6, thoughts 2.
USAGE = {"promptTokenCount": 21, "candidatesTokenCount": 6, "thoughtsTokenCount": 2, "totalTokenCount": 29,
         "cachedContentTokenCount": 4, "trafficType": "ON_DEMAND"}
MODEL_VERSION = "gemini-2.5-flash-001"


def google_error(code, status, message):
    return code, {"content-type": "application/json; charset=UTF-8"}, json.dumps(
        {"error": {"code": code, "message": message, "status": status}}).encode()


def unknown_fields(obj, known, where):
    extra = sorted(set(obj) - known)
    if extra:
        return f'Invalid JSON payload received. Unknown name "{extra[0]}" at \'{where}\': Cannot find field.'
    return None


def check_shape(body):
    """The message the real service would give for a malformed body, or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    problem = unknown_fields(body, TOP_LEVEL, "")
    if problem:
        return problem
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "Unable to submit request because at least one contents field is required."
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        if not content.get("parts"):
            return f"Unable to submit request because it must include at least one parts field (contents[{i}])"
        for part in content["parts"]:
            problem = unknown_fields(part, PART, f"contents[{i}].parts[0]")
            if problem:
                return problem
            if "functionResponse" in part and not isinstance(part["functionResponse"].get("response"), dict):
                return "functionResponse.response must be an object"
        calls = [p for p in content["parts"] if "functionCall" in p]
        if content["role"] == "model" and calls and not calls[0].get("thoughtSignature"):
            # As Gemini 3 answers: the signature of a call must come back with it.
            return (f"Function call is missing a thought_signature in functionCall parts. "
                    f"(contents[{i}].parts)")
    system = body.get("systemInstruction")
    if system is not None and not all("text" in p for p in system.get("parts", [])):
        return "systemInstruction parts must be text"
    for tool in body.get("tools", []):
        for declaration in tool.get("functionDeclarations", []):
            problem = unknown_fields(declaration, FUNCTION_DECLARATION, "tools[0].function_declarations[0]")
            if problem:
                return problem
    config = body.get("generationConfig", {})
    problem = unknown_fields(config, GENERATION_CONFIG, "generation_config")
    if problem:
        return problem
    if "responseJsonSchema" in config and config.get("responseMimeType") != "application/json":
        return "responseJsonSchema needs responseMimeType application/json"
    return None


def plan(body):
    """(text, function call or None): a call when tools are offered and no
    function response came back yet; the tool's output once it did; JSON
    in JSON mode; a greeting otherwise."""
    last = body["contents"][-1]["parts"]
    responses = [p["functionResponse"] for p in last if "functionResponse" in p]
    if responses:
        output = responses[0]["response"].get("output", json.dumps(responses[0]["response"]))
        return f"Tool said: {output}", None
    config = body.get("generationConfig", {})
    if body.get("tools") and body.get("toolConfig", {}).get("functionCallingConfig", {}).get("mode") != "NONE":
        return "Let me check.", {"name": body["tools"][0]["functionDeclarations"][0]["name"],
                                 "args": {"city": "Paris"}}
    if config.get("responseMimeType") == "application/json":
        return '{"city": "Paris", "temp": 21}', None
    return "Hello from Gemini", None


class FakeVertex(FakeProvider):
    """`token_ok(authorization header)` says whether the Bearer token is
    valid (e.g. `fake_gcp.FakeGoogleOAuth.valid`)."""

    def __init__(self, token_ok, project="test-project", location="us-central1"):
        self.token_ok = token_ok
        # (status, RPC status, message): every request fails so until unset.
        self.failing = None
        self.project = project
        self.location = location
        super().__init__(self.respond_vertex, name="vertex")

    def respond_vertex(self, request):
        if self.failing:
            return google_error(*self.failing)
        m = PATH.match(request.path)
        if request.method != "POST" or not m:
            return google_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found.")
        if not self.token_ok(request.headers.get("authorization")):
            return google_error(401, "UNAUTHENTICATED",
                                "Request had invalid authentication credentials. Expected OAuth 2 access token.")
        if m["project"] != self.project or m["location"] != self.location:
            return google_error(403, "PERMISSION_DENIED",
                                f"Permission denied on resource project {m['project']}.")
        stream = m["method"] == "streamGenerateContent"
        if stream and m["query"] != "?alt=sse":
            return google_error(400, "INVALID_ARGUMENT", "this fake only streams with alt=sse")
        if not stream and m["query"]:
            return google_error(400, "INVALID_ARGUMENT", "unexpected query")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return google_error(400, "INVALID_ARGUMENT", "content-type must be JSON")
        try:
            body = request.json()
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = check_shape(body)
        if problem:
            return google_error(400, "INVALID_ARGUMENT", problem)
        first = body["contents"][-1]["parts"][0].get("text")
        if first == "overload me":
            return google_error(429, "RESOURCE_EXHAUSTED",
                                "Resource exhausted. Please try again later.")
        if first == "break the request":
            return google_error(400, "INVALID_ARGUMENT", "The request is invalid in a way the fake made up.")
        text, call = plan(body)
        finish = "STOP"
        if not stream:
            parts = [{"text": text}] + ([{"functionCall": call, "thoughtSignature": "c2lnbmF0dXJl"}] if call else [])
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish, "avgLogprobs": -0.25}
            config = body.get("generationConfig", {})
            if config.get("responseLogprobs"):
                words = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
                chosen = [{"token": w, "logProbability": -0.25, "tokenId": i} for i, w in enumerate(words)]
                top = [{"candidates": [c] * config.get("logprobs", 0)} for c in chosen]
                candidate["logprobsResult"] = {"topCandidates": top, "chosenCandidates": chosen}
            answer = {"candidates": [candidate],
                      "usageMetadata": USAGE, "modelVersion": MODEL_VERSION,
                      "createTime": "2025-06-01T12:00:00.000000Z", "responseId": "vtx-resp-1"}
            return 200, {"content-type": "application/json; charset=UTF-8"}, json.dumps(answer).encode()
        events = []
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            event = {"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}}],
                     "usageMetadata": {"promptTokenCount": 21, "totalTokenCount": 21, "trafficType": "ON_DEMAND"},
                     "modelVersion": MODEL_VERSION, "createTime": "2025-06-01T12:00:00.000000Z",
                     "responseId": "vtx-stream-1"}
            events.append(event)
        last = {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": finish}],
                "usageMetadata": USAGE, "modelVersion": MODEL_VERSION,
                "createTime": "2025-06-01T12:00:00.000000Z", "responseId": "vtx-stream-1"}
        if call:
            last["candidates"][0]["content"]["parts"] = [{"functionCall": call, "thoughtSignature": "c2ln"}]
        else:
            last["candidates"][0]["content"]["parts"] = [{"text": ""}]
        events.append(last)
        chunks = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\r\n\r\n" for e in events]
        return 200, {"content-type": "text/event-stream"}, chunks
