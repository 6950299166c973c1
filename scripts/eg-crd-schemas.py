#!/usr/bin/env python3
"""Extracts the OpenAPI schemas of the Envoy Gateway CRDs that
deploy/envoy-gateway/ uses into deploy/envoy-gateway/schemas/, for the
structural test (xds-controller/src/kube_source/envoy_gateway_tests.rs).

    scripts/eg-crd-schemas.py /path/to/envoyproxy/gateway v1.5.0

Descriptions are dropped (they are most of the size); EnvoyProxy keeps only
spec.provider (type, kubernetes.envoyDeployment), the part used here."""
import json
import os
import subprocess
import sys

import yaml

KINDS = {
    "EnvoyExtensionPolicy": "envoyextensionpolicies",
    "EnvoyPatchPolicy": "envoypatchpolicies",
    "HTTPRouteFilter": "httproutefilters",
    "EnvoyProxy": "envoyproxies",
}


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def keep_only(schema, path):
    """Keeps, along `path`, only the named property at each level."""
    node = schema
    for name in path:
        node["properties"] = {name: node["properties"][name]}
        node.pop("required", None)
        node.pop("x-kubernetes-validations", None)
        node = node["properties"][name]


def main():
    repo, tag = sys.argv[1], sys.argv[2]
    out = os.path.join(os.path.dirname(__file__), "..", "deploy", "envoy-gateway", "schemas")
    for kind, plural in KINDS.items():
        path = f"charts/gateway-helm/crds/generated/gateway.envoyproxy.io_{plural}.yaml"
        text = subprocess.run(["git", "-C", repo, "show", f"{tag}:{path}"], check=True,
                              capture_output=True, text=True).stdout
        crd = yaml.safe_load(text)
        version = next(v for v in crd["spec"]["versions"] if v.get("served"))
        schema = strip(version["schema"]["openAPIV3Schema"])
        if kind == "EnvoyProxy":
            spec = schema["properties"]["spec"]
            spec["properties"] = {"provider": spec["properties"]["provider"]}
            spec.pop("x-kubernetes-validations", None)
            provider = spec["properties"]["provider"]
            provider["properties"] = {k: provider["properties"][k] for k in ("type", "kubernetes")}
            keep_only(provider["properties"]["kubernetes"], ["envoyDeployment"])
        document = {"source": f"github.com/envoyproxy/gateway {tag} {path}",
                    "apiVersion": f"{crd['spec']['group']}/{version['name']}",
                    "kind": kind, "openAPIV3Schema": schema}
        with open(os.path.join(out, f"{plural}.json"), "w") as f:
            json.dump(document, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
