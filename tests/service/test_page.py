"""The review page in a real headless browser (Debian's chromium driven by Playwright), against a
real `copyseek serve` process with API keys on.

Skipped where no browser is installed, except when COPYSEEK_REQUIRE_BROWSER=1 (set by .ci/run), where
a missing browser fails. COPYSEEK_SCREENSHOTS=docs writes the screenshots of the main views there.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from tests.service.conftest import start_server, stop_server

CHROMIUM = os.environ.get("COPYSEEK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def need_browser():
    """The Playwright module and the browser, or a skip (a failure when the browser is required)."""
    required = os.environ.get("COPYSEEK_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            pytest.fail("COPYSEEK_REQUIRE_BROWSER=1 but the playwright package is missing (make install)")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if required:
            pytest.fail(f"COPYSEEK_REQUIRE_BROWSER=1 but no chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip("no chromium browser (apt-get install chromium)")
    return sync_playwright


@pytest.fixture
def browser():
    sync_playwright = need_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("COPYSEEK_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for_image(page, selector: str) -> None:
    page.wait_for_function(f"() => {{ const i = document.querySelector('{selector}'); return i && i.complete && i.naturalWidth > 0; }}")


def drop_file(page, selector: str, path: Path, mime: str = "image/jpeg") -> None:
    """Drag and drop a file onto an element, as a user does from the file manager."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name, mime]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [data, path.name, mime],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_the_review_page_with_keys_on(browser, served, keys, shots):
    process, url = start_server(served / "index")
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(url)
        page.wait_for_selector("#message:not([hidden])")
        assert "API key" in page.inner_text("#message")  # keys on: nothing is shown without one

        page.fill("#api-key", keys["write"])
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("() => document.querySelector('#index-info').textContent.includes('8 references')")

        # upload: the query and its match side by side, the verdict at the threshold
        page.set_input_files("#query-file", str(served / "query.jpg"))
        page.wait_for_selector("#verdict.copy")
        assert page.inner_text("#verdict").startswith("copy of img0003")
        wait_for_image(page, "#query-image")
        wait_for_image(page, "#match-image")
        assert "img0003" in page.inner_text("#match-caption")
        assert page.locator("#matches tbody tr").count() == 5
        page.screenshot(path=str(shots / "serve-match.png"), full_page=True)

        # the explain picture of the best pair
        page.locator("#matches tbody tr").first.locator("button.explain").click()
        wait_for_image(page, "#explain-image")
        page.locator("#explain").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "serve-explain.png"), full_page=True)

        # nothing at a higher threshold: the nearest miss is named
        page.fill("#threshold", "1.5")
        page.wait_for_selector("#verdict.miss")
        assert "nearest miss: img0003" in page.inner_text("#verdict")
        page.screenshot(path=str(shots / "serve-nearest-miss.png"))

        # drop a photo that is not in the index
        page.fill("#threshold", "0.999")
        drop_file(page, "#drop", served / "extra" / "new0000.jpg")
        page.wait_for_function("() => document.querySelector('#query-name').textContent === 'new0000.jpg'")
        page.wait_for_selector("#verdict.miss")

        # browse references, add one with the write key
        page.click("#tab-references")
        page.wait_for_function("() => document.querySelectorAll('#reference-list li').length === 8")
        page.set_input_files("#add-files", str(served / "extra" / "new0001.jpg"))
        page.wait_for_function("() => document.querySelectorAll('#reference-list li').length === 9")
        page.wait_for_function("() => document.querySelector('#message').textContent.includes('added new0001')")
        for i in range(9):
            wait_for_image(page, f"#reference-list li:nth-child({i + 1}) img")
        page.screenshot(path=str(shots / "serve-references.png"), full_page=True)

        # remove one (the page asks first)
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#reference-list li[data-id='img0005'] button.remove").click()
        page.wait_for_function("() => document.querySelectorAll('#reference-list li').length === 8")
        assert page.locator("#reference-list li[data-id='img0005']").count() == 0
        page.wait_for_function("() => document.querySelector('#message').textContent.includes('removed img0005')")
    finally:
        stop_server(process)
