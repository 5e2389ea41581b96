"""A whole join in two headless Chromium browsers through two gateway processes behind a round-robin
proxy (tests/gateway/round_robin.py): admission, negotiation, tiles, quality, the events WebSocket and
a reconnect each land on both replicas in turn, and none is refused. Nothing is shared between the
replicas but the services behind them: what a step needs is in the join token the page holds or in
roster (GetMyAdmission).

Run inside a private network namespace (see test_replicas.py):
`python -m tests.gateway.replicas_scenario <artifacts dir>`; exit status 0 = passed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from svpl.media.v1 import media_pb2, media_pb2_grpc

from devstack.embedded_db import free_port
from devstack.stack import Stack
from tests.gateway import flow
from tests.gateway.browser_scenario import (
    CAMERAS,
    COORDINATOR,
    STAFF,
    Failed,
    assert_no_console_errors,
    browser,
    click,
    dev_login,
    evidence_and_cleanup,
    wait,
    wait_for_named_tiles,
    wait_for_others_playing,
    wait_for_people,
    write_camera,
)
from tests.gateway.round_robin import RoundRobin, serving_in_thread

STEPS = ("admission", "negotiation", "tiles", "quality", "events")


class PageClient:
    """flow.py's client, over the logged-in page's own fetch: its cookies, its CSRF header."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def _fetch(self, method: str, path: str, body=None, params=None) -> httpx.Response:
        if params:
            path += "?" + httpx.QueryParams(params).__str__()
        status, text = self.driver.execute_async_script("""
            const [method, path, body, done] = arguments;
            const csrf = (document.cookie.match(/(?:^|; )svpl_csrf=([^;]*)/) || [])[1] || "";
            fetch(path, {method, headers: {"content-type": "application/json", "x-csrf-token": decodeURIComponent(csrf)},
                         body: body === null ? undefined : JSON.stringify(body)})
              .then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));""",
                                                        method, path, body)
        return httpx.Response(status, text=text)

    async def get(self, path: str, params=None) -> httpx.Response:
        return self._fetch("GET", path, params=params)

    async def post(self, path: str, json=None) -> httpx.Response:
        return self._fetch("POST", path, json)


def drop_media_connection(stack: Stack, meeting_id: str, participant_id: str) -> None:
    """What a lost connection looks like to the page: media drops it (as roster would ask media to)."""
    with grpc.insecure_channel(stack.procs["media"].address) as channel:
        dropped = media_pb2_grpc.MediaServiceStub(channel).Disconnect(
            media_pb2.DisconnectRequest(meeting_id=meeting_id, participant_id=participant_id),
            metadata=(("authorization", f"Bearer {stack.tokens['roster']}"),), timeout=5)
        del dropped


def run(artifacts: Path) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="svpl-replicas-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack = Stack(work / "stack", extra_env={"SVPL_DEVELOPMENT_LOGIN": "true", "SVPL_SHUTDOWN_GRACE_SECONDS": "0.5",
                                             "SVPL_PUBLIC_URL": base, "SVPL_PORTAL_BASE_URL": base})
    drivers: list = []
    started = time.monotonic()
    with evidence_and_cleanup(artifacts, ("coordinator", "staff"), drivers, stack):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            launching = [pool.submit(browser, work / f"profile-{i}", write_camera(work / f"camera-{i}.y4m", *CAMERAS[name]))
                         for i, name in enumerate(("Vera Samordnare", STAFF[1]))]
            stack.start(timeout=30)
            stack.add_replica("gateway-b", of="gateway")
            drivers.extend(f.result() for f in launching)
        coordinator, staff = drivers
        proxy = RoundRobin([stack.procs["gateway"].address, stack.procs["gateway-b"].address])
        with serving_in_thread(proxy, port):
            print(f"two gateways, the proxy and browsers up in {time.monotonic() - started:.1f}s", flush=True)
            dev_login(coordinator, base, COORDINATOR)
            page = PageClient(coordinator)
            meeting_id = asyncio.run(flow.book_video_meeting(page))["meeting_id"]  # type: ignore[arg-type]
            rita = asyncio.run(flow.register(page, meeting_id, STAFF[1], "PARTICIPANT_ROLE_REGION_STAFF",  # type: ignore[arg-type]
                                             STAFF[0]))
            asyncio.run(flow.start(page, meeting_id))  # type: ignore[arg-type]
            dev_login(staff, base, STAFF[0])
            for driver in (coordinator, staff):
                driver.get(f"{base}/portal/#/room/{meeting_id}")
                click(driver, "#join")
            both = sorted(["Vera Samordnare", STAFF[1]])
            for driver, who, other in ((coordinator, "coordinator", STAFF[1]), (staff, STAFF[1], "Vera Samordnare")):
                wait_for_others_playing(driver, who, count=1)
                wait_for_people(driver, who, both)
                wait_for_named_tiles(driver, who, [other])
            print(f"both see each other at {time.monotonic() - started:.1f}s", flush=True)

            # A reconnect: media drops Rita's connection; her page asks to be admitted again and
            # renegotiates, through whichever replicas the proxy picks, and plays again.
            negotiated = sum(1 for k, _, status in proxy.served if k == "negotiation" and status < 400)
            drop_media_connection(stack, meeting_id, rita["participant_id"])
            wait(staff, "Rita's page negotiating again", lambda d: sum(
                1 for k, _, status in proxy.served if k == "negotiation" and status < 400) > negotiated, 60)
            for driver, who, other in ((coordinator, "coordinator", STAFF[1]), (staff, STAFF[1], "Vera Samordnare")):
                wait_for_others_playing(driver, f"{who} after the reconnect", count=1)
                wait_for_named_tiles(driver, f"{who} after the reconnect", [other])
            for step in STEPS:
                wait(staff, f"{step} served by both replicas",
                     lambda d, step=step: proxy.replicas_serving(step) == {0, 1}, 30)
            # (A quality asked between a drop and the reconnect is media's 404, not connected now: not counted.)
            refused = proxy.refused({"admission", "negotiation", "tiles", "quality", "events"})
            if refused:
                raise Failed(f"refused by a replica (state one of them lacked?): {refused}")
            for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1])):
                assert_no_console_errors(driver, who)
            counts = {step: sorted(i for k, i, _ in proxy.served if k == step) for step in STEPS}
            print(f"served by replica: {counts}", flush=True)
            print(f"scenario passed in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("SE_OFFLINE", "true")
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("test-artifacts/gateway-replicas"))
