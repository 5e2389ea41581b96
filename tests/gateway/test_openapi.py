"""The committed OpenAPI document is what the gateway serves (CI fails on drift)."""

from __future__ import annotations

import json

from services.gateway import openapi
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from tests.gateway.conftest import Browser


def test_committed_openapi_matches_the_code():
    committed = openapi.PATH.read_text(encoding="utf-8")
    assert committed == openapi.document(), "the API changed: run `make openapi` and commit services/gateway/openapi.json"


async def test_served_openapi_is_the_committed_one():
    browser = Browser(create_app(GatewaySettings(service_token="unused", development_login=True)))
    try:
        served = (await browser.get("/api/v1/openapi.json")).json()
    finally:
        await browser.close()
    assert served == json.loads(openapi.PATH.read_text(encoding="utf-8"))
