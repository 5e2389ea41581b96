"""The gateway's FastAPI application: the one HTTP entry for frontends."""

from __future__ import annotations

from fastapi import FastAPI

from services.gateway.config import GatewaySettings


def create_app(settings: GatewaySettings) -> FastAPI:
    app = FastAPI(title="svpl gateway", version="1.0.0", openapi_url="/api/v1/openapi.json")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    return app
