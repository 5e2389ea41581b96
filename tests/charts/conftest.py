"""Render the Helm chart offline (Helm v4 SDK) and parse what it produces."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "svpl"
SERVICES = ["identity", "booking", "roster", "media", "support", "gateway"]
# Every image the one Dockerfile builds: the services above (the generic components) and the
# deployables with a template of their own (templates/dialin.yaml).
IMAGES = [*SERVICES, "dialin"]
RELEASE, NAMESPACE = "care", "svpl-prod"

# What an operator must provide (secret names only: the chart never holds secret values).
REQUIRED = {
    "mongodb": {"uriSecret": {"name": "svpl-mongodb", "key": "uri"}},
    "serviceTokens": {"secretName": "svpl-service-tokens"},
    "identity": {"signingKeysSecret": "svpl-signing-keys", "siths": {"caSecret": "svpl-siths-ca"},
                 "directory": {"ldap": {"url": "ldaps://hsa.example.se:636", "baseDn": "c=SE"}}},
    "turn": {"authSecret": {"name": "svpl-turn", "key": "secret"}, "tls": {"secretName": "svpl-turn-tls"}},
    # Where the API server is (media's pod-deletion-cost updater may reach it, nothing else).
    "networkPolicy": {"apiServer": {"cidrs": ["10.96.0.1/32", "172.18.0.2/32"]}},
    # The outside systems (#16): each set (or, in the tests that say so, switched off).
    "gateway": {"publicUrl": "https://vardmote.example.se"},
    "ingress": {"tls": {"secretName": "svpl-portal-tls"}},
    "booking": {"cosmicLink": {"url": "https://cosmic-bridge.example.se/messages"}},
    "roster": {"inbox1177": {"url": "https://inbox.1177.example.se/api", "clientCertSecret": "svpl-ntjp-function-cert"}},
}


def merged(*overlays: dict) -> dict:
    out: dict = copy.deepcopy(REQUIRED)
    for overlay in overlays:
        _merge(out, overlay)
    return out


def _merge(into: dict, overlay: dict) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


@pytest.fixture(scope="session")
def chart():
    return helm.Chart.load(str(CHART))


class Rendered:
    """Every manifest of one render, parsed; NOTES.txt kept as text."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.notes = ""
        self.manifests: list[dict] = []
        for path, text in files.items():
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            # Blank entries (disabled templates) yield nothing.
            for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if doc:
                    self.manifests.append(doc)

    def of_kind(self, kind: str) -> list[dict]:
        return [m for m in self.manifests if m["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {m["metadata"]["name"] for m in self.of_kind(kind)}

    def deployment(self, service: str) -> dict:
        return self.get("Deployment", f"{RELEASE}-svpl-{service}")

    def container(self, service: str) -> dict:
        return self.deployment(service)["spec"]["template"]["spec"]["containers"][0]

    def config(self, service: str) -> dict:
        return self.get("ConfigMap", f"{RELEASE}-svpl-{service}")["data"]


@pytest.fixture(scope="session")
def render(chart):
    cache: dict[str, Rendered] = {}  # tests only read what they get: one render per value set

    def _render(*overlays: dict) -> Rendered:
        values = merged(*overlays)
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            cache[key] = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))
        return cache[key]

    return _render
