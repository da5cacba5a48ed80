"""Real-browser check of the built book: headless Debian Chromium driven by Python playwright.

Every page in the TOC opens from ``file://`` with all non-file requests blocked and counted:
title and sidebar present, no broken image, maths typeset by the vendored MathJax, widgets
rendered where the chapter stores them, Colab and Binder launch links on every chapter.
Needs ``make html`` first (``make test`` runs it before this file); fails, never skips, if not.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.browser

HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: chapters whose explorer must render as a live widget view in the HTML
WIDGET_CHAPTERS = {"book/01_boxes_iou_nms"}


def _toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part.get("chapters", [])]
    return [p.rsplit(".", 1)[0] if p.endswith((".md", ".ipynb")) else p for p in pages]


PAGES = _toc_pages()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian chromium is not installed (make chromium)"
    assert (HTML / "index.html").is_file(), "the book is not built: run `make html` first"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


def _open(context, page_name: str):
    """Open one built page with every non-file request aborted.

    Returns the page, the URLs that tried to leave the machine, and the local files that failed
    to load (a file the HTML asks for but the build did not produce).
    """
    blocked: list[str] = []

    def route(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page = context.new_page()
    page.route("**/*", route)
    missing: list[str] = []
    page.on(
        "requestfailed",
        lambda request: missing.append(request.url) if request.url.startswith("file://") else None,
    )
    page.goto((HTML / f"{page_name}.html").as_uri(), wait_until="load")
    page.wait_for_timeout(500)
    return page, blocked, missing


@pytest.mark.parametrize("page_name", PAGES)
def test_page_renders_offline(browser, page_name):
    page, blocked, missing = _open(browser, page_name)
    try:
        assert page.title().strip(), "empty <title>"
        assert page.locator("h1").count() >= 1, "no page heading"
        assert page.locator(".bd-sidebar-primary nav a").count() >= 2, "sidebar navigation missing"
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)"
        )
        assert broken == [], f"broken images: {broken}"
        if page.locator(".math").count():
            page.wait_for_selector("mjx-container", state="attached", timeout=15000)
            raw = page.evaluate(
                "Array.from(document.querySelectorAll('.math')).filter("
                "e => !e.querySelector('mjx-container') && e.tagName !== 'MJX-CONTAINER').length"
            )
            assert raw == 0, f"{raw} maths elements were left untypeset"
        if page_name in WIDGET_CHAPTERS:
            page.wait_for_selector(
                ".widget-slider, .jupyter-widgets .widget-hslider", timeout=15000
            )
            assert page.locator(".jupyter-widgets").count() >= 1
        if page_name.split("/")[-1][:2].isdigit():
            links = page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.href)")
            assert any("colab.research.google.com" in h for h in links), "no Colab launch link"
            assert any("mybinder.org" in h for h in links), "no Binder launch link"
        page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '_')}.png"), full_page=False)
        assert blocked == [], f"{len(blocked)} requests tried to leave the machine: {blocked[:5]}"
        assert missing == [], f"files the page asks for are missing from the build: {missing[:5]}"
    finally:
        page.close()
