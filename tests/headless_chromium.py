"""Headless Chromium for the browser tests, and the rule for when it is missing.

Two test files drive a real browser: `test_rendered_book.py` (the built book, served from a
local web server) and `test_web.py` (the live sampler's page, opened from ``file://``).  Both
start Chromium the same way -- headless, no sandbox (containers), no background traffic
(updates, sync, first-run pages), fixed timeouts -- and differ only in the window size and in
how the network is cut off, which each test passes in: the rendered book must still reach its
server on 127.0.0.1, the sampler's page must reach nothing at all.

Where Chromium is missing the browser checks skip, except under CI (``CI=1``/``true``/``yes``),
where a skipped check would be a check that silently never ran: there they fail instead.
"""
from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# A browser that starts quickly and talks to no one on its own: no GPU or sandbox (containers),
# /tmp instead of a small /dev/shm, no updates, sync, first-run pages or QUIC.
COMMON_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic")
TIMEOUT_S = 60  # page loads and asynchronous scripts; a hang fails the test instead of blocking it


def unavailable(reason: str):
    """Skip the test for ``reason``; under CI fail instead, since there the check must run."""
    if IN_CI:
        pytest.fail(f"{reason} (under CI this check must run, never skip)")
    pytest.skip(reason)


def start_chromium(window_size: tuple[int, int], resolver_rules: str, proxy_server: str | None = None):
    """A selenium driver for headless Chromium; the caller quits it.

    ``window_size`` is (width, height) in CSS pixels.  ``resolver_rules`` is Chromium's
    ``--host-resolver-rules`` (e.g. ``"MAP * ~NOTFOUND"``: no host name resolves), and
    ``proxy_server``, if given, is sent every request (a dead port cuts off even literal
    IP addresses).  Skips (fails under CI) where Chromium or chromedriver is not installed.
    """
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        unavailable("headless Chromium is not installed (Debian packages chromium and chromium-driver; "
                    "`make test` installs them when it runs as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    width, height = window_size
    flags = [*COMMON_FLAGS, f"--window-size={width},{height}", f"--host-resolver-rules={resolver_rules}"]
    if proxy_server is not None:
        flags.append(f"--proxy-server={proxy_server}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(TIMEOUT_S)
    driver.set_script_timeout(TIMEOUT_S)
    return driver


def hangul(text: str) -> int:
    """How many Hangul syllables ``text`` holds: the browser tests' check that a page speaks Korean."""
    return sum("\uac00" <= c <= "\ud7a3" for c in text)
