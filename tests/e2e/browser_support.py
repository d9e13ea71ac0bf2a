"""A real headless Chromium for browser tests: Debian's ``chromium`` driven by ``chromium-driver`` via Selenium.

Nothing is downloaded: the browser and driver are the Debian packages ``.ci/run`` installs
(``apt-get install chromium chromium-driver``), and Selenium Manager is kept offline. Without them the
test is skipped with the install command as the reason, except under CI (``CI`` set), where it fails.
With explicit browser and driver paths Selenium does not run Selenium Manager; tests also set
``SE_OFFLINE=true`` so that it could not fetch anything if it did.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1600",
                  # no DNS for anything but loopback: the page must not need any other host (no CDN)
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")


def _find(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)


def require_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skips the test when they are missing (fails under CI)."""
    chromium, driver = _find("chromium"), _find("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = ("Debian's chromium and chromium-driver are not installed "
              "(apt-get install -y chromium chromium-driver; .ci/run does)")
    if os.environ.get("CI"):
        pytest.fail(reason + " -- under CI the browser test must run")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(profile_dir: Path) -> Iterator["object"]:
    """A Selenium WebDriver on a fresh headless Chromium profile in ``profile_dir``; quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.set_page_load_timeout(20)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()
