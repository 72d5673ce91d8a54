"""The OS's headless Chromium, driven by Selenium, for the tests that look at pages (the
server's web page, the documentation site). Where Chromium or its driver is missing, those
tests skip with ``needs_chromium``'s reason; .ci/run installs both."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="this test needs Chromium and its driver from the OS packages "
           "(Debian: apt-get install chromium chromium-driver); .ci/run installs them")


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Selenium driver of a headless Chromium with a profile of its own, removed after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="torchinfer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # no GPU, no sandbox (CI runs as root); nothing that phones home on a closed network
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
