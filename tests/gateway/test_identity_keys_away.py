"""A gateway that has not yet fetched identity's signing keys while identity is away (restarting,
see tests/faults/test_services_killed.py) answers a logged-in request with a 503 problem the
portal retries, not a 500."""

from devstack.embedded_db import free_port
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from tests.gateway.conftest import ALL, Browser


async def test_identity_away_is_a_503_problem(person_token, service_token):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: identity (and the rest) away
    app = create_app(GatewaySettings(service_token=service_token("gateway"),
                                     **{f"{name}_address": dead for name in ALL}))
    browser = Browser(app)
    try:
        browser.http.cookies.set("svpl_session", person_token("coordinator"), domain="gateway.test")
        response = await browser.get("/api/v1/meetings")
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == 503
    finally:
        await browser.close()
        await app.state.backends.close()
