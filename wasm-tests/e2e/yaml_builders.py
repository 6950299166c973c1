"""Builders for the resources the e2e tests give aigw, so a test spells out
only what is particular to it. Each returns YAML documents that start with
`---`; a configuration is their concatenation:

    config = (gateway()
              + backend("azure", "AzureOpenAI", loopback(port), version=API_VERSION)
              + security_policy("azure-key", "azure", "AzureAPIKey",
                                "azureAPIKey: {secretRef: {name: azure-key}}")
              + secret("azure-key", {"apiKey": KEY})
              + route("route", {"gpt-5-nano": "azure"}))
"""
import json
import os

from conftest import SHARED

# The seed deployment's YAML (Gateway ai-gateway in namespace default, its
# backends and routes), loaded unchanged.
SEED_FILES = [os.path.join(SHARED, "blueprint", f) for f in
              ("gateway.yaml", "model-backends.yaml", "multi-model-routing/ai-gateway-route.yaml")]


def loopback(port):
    """A Backend endpoint on 127.0.0.1."""
    return f"{{ip: {{address: 127.0.0.1, port: {port}}}}}"


def fqdn(hostname, port):
    """A Backend endpoint by hostname (for `aigw run --resolve`)."""
    return f"{{fqdn: {{hostname: {hostname}, port: {port}}}}}"


def flow(mapping):
    """A YAML flow mapping of plain scalars: {"name": "a", "priority": 0} -> {name: a, priority: 0}."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


def gateway(name="gw"):
    """A Gateway of class aigw with one HTTP listener on port 80."""
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"""


def envoy_backend(name, endpoint):
    """An Envoy Gateway Backend with one endpoint (`loopback` or `fqdn`)."""
    return f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  endpoints: [{endpoint}]
"""


def ai_service_backend(name, schema, backend=None, version=None):
    """An AIServiceBackend of API `schema` (and schema `version`) in front of
    the Backend `backend` (by default the one named like it)."""
    schema = flow({"name": schema, **({"version": version} if version else {})})
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {schema}
  backendRef: {{name: {backend or name}, kind: Backend, group: gateway.envoyproxy.io}}
"""


def backend(name, schema, endpoint, version=None):
    """A Backend at `endpoint` and the AIServiceBackend in front of it, both `name`."""
    return envoy_backend(name, endpoint) + ai_service_backend(name, schema, version=version)


def security_policy(name, target, type_, settings):
    """A BackendSecurityPolicy of type `type_` for the AIServiceBackend
    `target`; `settings` is the YAML of its spec after `type:` (lines
    indented as under `spec:`, the first line's two spaces added here)."""
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}]
  type: {type_}
  {settings}
"""


def secret(name, string_data):
    """A Secret with this stringData ({"apiKey": "sk-..."})."""
    return f"""---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData: {flow(string_data)}
"""


def route(name, rules, spec=""):
    """An AIGatewayRoute on Gateway gw: `rules` maps each model (the
    x-ai-eg-model header) to the backend it goes to, by name, or to a list
    of backendRefs as mappings ({"name": "a", "priority": 0}). `spec`: more
    YAML lines under `spec:` (indented two spaces)."""
    lines = []
    for model, refs in rules.items():
        refs = [{"name": refs}] if isinstance(refs, str) else refs
        lines.append(f"  - matches: [{{headers: [{{name: x-ai-eg-model, value: {json.dumps(model)}}}]}}]\n"
                     f"    backendRefs: [{', '.join(flow(r) for r in refs)}]\n")
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
{"".join(lines)}{spec}"""


def seed_bedrock(name, models):
    """An AWSBedrock backend `name` at Bedrock in us-west-2 (with static AWS
    credentials) next to the seed deployment: the Backend `name`-backend,
    the policy `name`-policy and the route `name`-route on ai-gateway,
    serving `models`, all in namespace default."""
    rules = "".join(f"""  - matches: [{{headers: [{{name: x-ai-eg-model, type: Exact, value: {json.dumps(m)}}}]}}]
    backendRefs: [{{name: {name}}}]
""" for m in models)
    return f"""
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}-backend, namespace: default}}
spec:
  endpoints: [{{fqdn: {{hostname: bedrock-runtime.us-west-2.amazonaws.com, port: 443}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: default}}
spec:
  schema: {{name: AWSBedrock}}
  backendRef: {{name: {name}-backend, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {name}-policy, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: AWSCredentials
  awsCredentials: {{region: us-west-2}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: {name}-route, namespace: default}}
spec:
  parentRefs: [{{name: ai-gateway, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
{rules}"""
