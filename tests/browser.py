"""A real headless Chromium for the viewer's tests: Debian's ``chromium`` driven
through its ``chromedriver`` by Selenium.

:func:`chromium_or_skip` finds both, installing Debian's ``chromium`` and
``chromium-driver`` when they are missing and this is root with apt-get (as the
balancer tests install nginx); where that cannot be done the browser tests skip,
saying why. Selenium is told where the driver is, so it never downloads one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

PACKAGES = ("chromium", "chromium-driver")
_lock = threading.Lock()


def _found() -> tuple[str, str] | None:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chromium_or_skip() -> tuple[str, str]:
    """``(chromium, chromedriver)`` paths, installed when missing, or skip the test."""
    with _lock:
        found = _found()
        if found:
            return found
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("the viewer's browser tests need Debian's chromium and chromium-driver "
                        "(apt-get install chromium chromium-driver), and installing them "
                        "needs root and apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", *PACKAGES]):
            r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=900)
            if r.returncode != 0:
                pytest.skip(f"cannot install {' '.join(PACKAGES)} ({' '.join(cmd[:2])} failed: "
                            f"{(r.stderr.strip().splitlines() or ['?'])[-1]})")
        found = _found()
        if not found:
            pytest.skip("chromium or chromedriver still missing after apt-get install")
        return found


def start_chromium(width: int = 1920, height: int = 1080, extra_args=()):
    """A headless Chromium window of ``width`` x ``height`` CSS pixels (device scale 1);
    ``extra_args``: more command-line switches."""
    from selenium import webdriver

    browser, driver = chromium_or_skip()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--enable-precise-memory-info", "--disable-extensions",
                "--no-first-run", "--disable-background-networking", *extra_args):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver)
    driver = webdriver.Chrome(options=opts, service=service)
    # The page's viewport exactly (the window's size would include what headless keeps for
    # its frame).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1,
                            "mobile": False})
    return driver
