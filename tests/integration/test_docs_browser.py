"""/docs renders in a real headless Chromium with no internet: the API is served
by uvicorn on a loopback port (the app over the generated-data model of the unit tests),
the page's operations appear in the DOM, and every request the page made stayed on
127.0.0.1 (Chromium's network log; its resolver is also pinned to loopback, so nothing
could leave the machine anyway). Needs Debian's ``chromium`` and ``chromium-driver``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers.serving import make_app, uvicorn_in_thread

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # Any host name but the loopback address fails to resolve: a test never sends traffic out.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
RENDER_TIMEOUT = 60.0
OPERATIONS = {
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/model"),
    ("POST", "/admin/reload"),
    ("GET", "/metrics"),
}


@pytest.fixture(scope="module")
def api_url(served: Any) -> Iterator[str]:
    with uvicorn_in_thread(make_app(served, admin_token="docs-test-admin-token-0123")) as url:  # /admin/reload on
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("headless browser test needs Debian's chromium and chromium-driver (see .ci/run)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for (Chromium's DevTools network events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_stayed_local(urls: list[str], api_url: str) -> None:
    """No network request (http, https, ws, wss) but to the API itself; the browser's own
    chrome:// pages and data:/blob: URLs are not network traffic."""
    network = [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
    remote = [u for u in network if urlsplit(u).netloc != urlsplit(api_url).netloc]
    assert network and remote == [], f"the page requested outside {api_url}: {remote}"


def test_swagger_ui_renders_every_operation_offline(browser: Any, api_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{api_url}/docs")
    blocks = WebDriverWait(browser, RENDER_TIMEOUT).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, ".opblock")
            if len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(OPERATIONS)
            else False
        )
    )
    rendered = {
        (
            b.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.strip(),
            b.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
        )
        for b in blocks
    }
    assert rendered >= OPERATIONS
    assert "StreamFlow churn prediction API" in browser.find_element(By.CSS_SELECTOR, ".title").text
    urls = requested_urls(browser)
    assert f"{api_url}/static-offline-docs/swagger-ui-bundle.js" in urls
    assert f"{api_url}/openapi.json" in urls
    assert_stayed_local(urls, api_url)
