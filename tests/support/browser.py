"""Opens a page in the machine's headless Chromium (Debian's ``chromium``, which scripts/test installs)
through Playwright, and reports what a person would notice: console errors, failed requests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.services import ROOT

ARTIFACTS = ROOT / "test-artifacts"
"""Screenshots the browser tests keep (ignored by git)."""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: scripts/test installs Debian's chromium package"
    return path


@dataclass
class Opened:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


async def open_page(url: str, screenshot: Path, check: Any) -> Opened:
    """Loads ``url``, calls ``await check(page)``, and saves a full-page screenshot."""
    from playwright.async_api import async_playwright

    opened = Opened()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: opened.page_errors.append(str(e)))
            page.on("requestfailed", lambda r: opened.failed_requests.append(r.url))
            page.on("request", lambda r: opened.requests.append(r.url))
            await page.goto(url, wait_until="load")
            await check(page)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(screenshot), full_page=True)
        finally:
            await browser.close()
    return opened
