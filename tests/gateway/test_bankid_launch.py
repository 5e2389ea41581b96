"""The login page's BankID launch link, in headless Chromium against the gateway and identity
talking to the BankID test server: a phone gets BankID's universal link (https://app.bankid.com/),
a computer the bankid:/// scheme, both with the order's autostart token."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from services.gateway.app import create_app
from tests.gateway.browser_scenario import CHROMIUM_FLAGS
from tests.gateway.conftest import gateway_settings, serving

PHONE = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36"


@pytest.fixture
async def portal(system_factory, bankid_server, tls_files):
    system = await system_factory(["identity"], overrides={"identity": dict(
        bankid_url=bankid_server.url, bankid_client_cert_file=tls_files["rp_cert"],
        bankid_client_key_file=tls_files["rp_key"], bankid_ca_file=tls_files["server_ca"])})
    async with serving(create_app(gateway_settings(system, development_login=False)), lifespan="on") as address:
        yield f"http://{address}"


def launch_link(base: str, user_agent: str | None) -> str:
    """Open the login page, start a BankID login, and read the link the page offers."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    if user_agent:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 412, "height": 915, "pixelRatio": 2.6, "touch": True},
            "userAgent": user_agent})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{base}/auth/rjl/login")
        driver.find_element(By.ID, "bankid-start").click()

        def offered(d) -> str | None:
            href = d.find_element(By.ID, "bankid-open").get_attribute("href") or ""
            return href if "autostarttoken=" in href else None

        try:
            link = WebDriverWait(driver, 20).until(offered)
        except TimeoutException:
            raise AssertionError(f"no launch link; the page says {driver.find_element(By.ID, 'login-message').text!r}"
                                 ) from None
        assert link  # until() returns only a truthy answer
        return link
    finally:
        driver.quit()


@pytest.mark.slow
async def test_a_phone_gets_bankids_universal_link_and_a_computer_the_app_scheme(portal):
    phone = await asyncio.to_thread(launch_link, portal, PHONE)
    computer = await asyncio.to_thread(launch_link, portal, None)
    for link, start in ((phone, "https://app.bankid.com/?"), (computer, "bankid:///?")):
        assert link.startswith(start), link
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["autostarttoken"][0]
        assert len(token) == 36  # the order's autoStartToken (a UUID)
