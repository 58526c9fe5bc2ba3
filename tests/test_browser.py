"""A real headless Chromium opens the app, uploads a photo and reads the predicted label."""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: apt-get install chromium (see .ci/run)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


def test_upload_a_photo_and_see_the_label(running_app, sandal_photo, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(running_app["url"], wait_until="domcontentloaded")
            page.locator("#classify-image input[type=file]").set_input_files(str(sandal_photo))
            expect(page.locator("#classify-label")).to_contain_text("sandal", timeout=60_000)
            expect(page.locator("#classify-status")).to_contain_text("v1")
            page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)
        finally:
            browser.close()
