"""Headless Chromium (the system's, driven by playwright) for the web-page tests."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FAKE_MICROPHONE_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                        "--autoplay-policy=no-user-gesture-required"]


@contextlib.contextmanager
def chromium_page(*extra_args: str) -> Iterator[tuple[object, list[str]]]:
    """A fresh page and the list its JavaScript errors are collected into; the browser closes afterwards."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=[*CHROMIUM_ARGS, *extra_args], headless=True)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda err: problems.append(str(err)))
            yield page, problems
        finally:
            browser.close()
