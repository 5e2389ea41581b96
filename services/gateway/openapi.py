"""Write the gateway's OpenAPI document to services/gateway/openapi.json (`make openapi`).

The committed file is the published contract of the REST API; tests/gateway/test_openapi.py
fails when the code and the file differ, so a change to the API is always a visible diff."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings

PATH = Path(__file__).resolve().parent / "openapi.json"


def document() -> str:
    app = create_app(GatewaySettings(service_token="unused", development_login=True))  # noqa: S106 - never used
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PATH
    target.write_text(document(), encoding="utf-8")
    print(f"wrote {target}")
