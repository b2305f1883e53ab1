"""Headless Debian Chromium driven by Selenium, for tests of pages whose JavaScript matters."""

import os
import shutil
import tempfile

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def chromium_available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def require_chromium() -> None:
    if chromium_available():
        return
    if os.environ.get("CI"):
        pytest.fail("Chromium is not installed; .ci/run installs chromium and chromium-driver.")
    pytest.skip("Debian's chromium and chromium-driver are not installed here.")


def start_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
    ):
        options.add_argument(flag)
    # The console, for tests that read what the page reported (e.g. CSP violations).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def log_in(browser, live_server, client, user) -> None:
    """Give the browser the session cookie of a user logged in through the test client."""
    client.force_login(user)
    browser.get(live_server.url + "/healthz")
    session = client.cookies["sessionid"]
    browser.add_cookie({"name": "sessionid", "value": session.value, "path": "/"})
