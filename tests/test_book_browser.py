"""Real-browser check of the built book: headless Debian Chromium driven by Python playwright.

Every page in the TOC opens from ``file://`` with all non-file requests blocked and counted, at
1280 px (a desktop) and 390 px (a phone), and is screenshotted at both widths into
``_build/screenshots/``. Checked on every page: title and sidebar present, no broken image,
maths typeset by the vendored MathJax, zero console errors, nothing cut off (no ``pre`` block
clipped at 1280 px, no element wider than the viewport at 390 px), Markdown tables in outputs
rendered as tables, ``show_source`` listings collapsed; on chapters, widgets rendered where the
chapter stores them and launch links exactly when ``repository.url`` is configured. The sidebar
must open and close at both widths, and the header must hold one search button and an
unbroken title.

Needs ``make html`` first (``make test`` runs it before this file); fails, never skips, if not.
``RCNN_LAB_BOOK_HTML`` points the checks at another build (default: ``_build/html``); the
screenshots then go to the ``screenshots`` folder next to it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.browser

HTML = Path(os.environ.get("RCNN_LAB_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SHOTS = HTML.parent / "screenshots"
DESKTOP, PHONE = 1280, 390
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # From file:// Chromium treats every font file as cross-origin and refuses the theme's
    # icon fonts (a console error); served over http, as readers get the book, they are
    # same-origin. This flag gives file:// pages the same rule.
    "--allow-file-access-from-files",
]


def _toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part.get("chapters", [])]
    return [p.rsplit(".", 1)[0] if p.endswith((".md", ".ipynb")) else p for p in pages]


PAGES = _toc_pages()
CHAPTERS = [p for p in PAGES if p.split("/")[-1][:2].isdigit()]
#: empty when _config.yml sets no address (the book then hides its launch buttons)
REPOSITORY_URL = (
    (yaml.safe_load((ROOT / "_config.yml").read_text()).get("repository") or {}).get("url") or ""
).strip()


def _show_source_calls(page_name: str) -> int:
    """How many ``show_source(...)`` displays the chapter's code cells make (one per call)."""
    path = ROOT / f"{page_name}.ipynb"
    if not path.is_file():
        return 0
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    calls = len(re.findall(r"^\s*(?:_ = )?show_source\(", code, flags=re.MULTILINE))
    # helpers that wrap show_source (chapter 14's show_torchvision) store a listing per call too
    stored = _notebook_text(page_name, "outputs").count('<details class="rcnn-source"')
    return max(calls, stored)


def _notebook_json(page_name: str) -> str:
    """The chapter's notebook file as text ("" for a Markdown page)."""
    path = ROOT / f"{page_name}.ipynb"
    return path.read_text() if path.is_file() else ""


def _notebook_text(page_name: str, cell_type: str) -> str:
    """All sources (``"markdown"``/``"code"``) or, for ``"outputs"``, stored HTML and Markdown
    outputs."""
    path = ROOT / f"{page_name}.ipynb"
    if not path.is_file():
        return ""
    cells = json.loads(path.read_text())["cells"]
    if cell_type == "outputs":
        return "\n".join(
            "".join(out.get("data", {}).get(mime, ""))
            for c in cells
            if c["cell_type"] == "code"
            for out in c.get("outputs", [])
            for mime in ("text/html", "text/markdown")
        )
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == cell_type)


#: chapters that store a widget view (an explorer): it must render as widgets with its figure
WIDGET_CHAPTERS = [
    p for p in CHAPTERS if "application/vnd.jupyter.widget-view+json" in _notebook_json(p)
]
#: chapters that store pre-drawn explorer frames (rcnn_lab.viz.frames) for the static book
FRAME_CHAPTERS = [p for p in CHAPTERS if 'class="rl-frames"' in _notebook_text(p, "outputs")]
#: chapters with a collapsible deep dive (a MyST dropdown titled "Deep dive...")
DEEP_DIVE_CHAPTERS = [
    p for p in CHAPTERS if re.search(r"\{dropdown\} Deep dive", _notebook_text(p, "markdown"))
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian chromium is not installed (make chromium)"
    assert (HTML / "index.html").is_file(), f"the book is not built in {HTML}: run `make html`"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": DESKTOP, "height": 900},
        )
        yield context
        context.close()


class Opened:
    """One built page, opened with every non-file request aborted.

    ``blocked``: URLs that tried to leave the machine; ``missing``: local files the HTML asks
    for but the build did not produce; ``errors``: console errors and uncaught exceptions.
    """

    def __init__(self, context, page_name: str, width: int):
        self.blocked: list[str] = []
        self.missing: list[str] = []
        self.errors: list[str] = []
        self.page = page = context.new_page()
        page.set_viewport_size({"width": width, "height": 900})
        page.route("**/*", self._route)
        page.on("requestfailed", self._failed)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda err: self.errors.append(f"uncaught: {err}"))
        page.goto((HTML / f"{page_name}.html").as_uri(), wait_until="load")
        if page.locator(".math").count():
            page.wait_for_selector("mjx-container", state="attached", timeout=15000)
        page.wait_for_timeout(800)  # the widget manager renders after load

    def _route(self, route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _failed(self, request):
        if request.url.startswith("file://"):
            self.missing.append(request.url)

    def screenshot(self, page_name: str, width: int) -> None:
        self.page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '_')}_{width}.png"))


@pytest.fixture
def opened(browser):
    pages: list[Opened] = []

    def open_page(page_name: str, width: int = DESKTOP) -> Opened:
        pages.append(Opened(browser, page_name, width))
        return pages[-1]

    yield open_page
    for p in pages:
        p.page.close()


# Elements whose right edge passes the viewport and that no scrolling ancestor contains
# (hidden ones, off-canvas drawers and MathJax's invisible assistive copies excluded).
_TOO_WIDE_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const scrolls = el => { for (let p = el.parentElement; p && p !== document.body;
      p = p.parentElement) { const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll') return true; } return false; };
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.right <= vw + 1 || r.left >= vw) continue;
    if (getComputedStyle(el).visibility === 'hidden' || el.closest('mjx-assistive-mml')) continue;
    if (!scrolls(el)) wide.push(`${el.tagName.toLowerCase()}.${el.className} ` +
        `(${Math.round(r.right)} px): ${(el.textContent || '').trim().slice(0, 60)}`);
  }
  return {page: document.documentElement.scrollWidth, vw, wide};
}"""

_CLIPPED_PRE_JS = """() => Array.from(document.querySelectorAll('.bd-article pre'))
  .filter(p => p.clientWidth > 0 && p.scrollWidth > p.clientWidth + 1)
  .map(p => `${p.scrollWidth - p.clientWidth} px hidden: ${p.textContent.trim().slice(0, 60)}`)"""

# A Markdown table left as text: an output paragraph with two or more "| ... |" lines (its
# delimiter row may have become dashes: smartquotes turn --- into an em dash).
_RAW_TABLES_JS = """() => Array.from(document.querySelectorAll('.cell_output p, .cell_output li'))
  .map(e => e.textContent).filter(t => (t.match(/^\\s*\\|.*\\|\\s*$/gm) || []).length >= 2)
  .map(t => t.slice(0, 80))"""


@pytest.mark.parametrize("page_name", PAGES)
def test_page_renders_offline(opened, page_name):
    """Desktop: content, maths, widgets, launch links, nothing clipped, no console error."""
    o = opened(page_name)
    page = o.page
    o.screenshot(page_name, DESKTOP)
    assert page.title().strip(), "empty <title>"
    assert page.locator("h1").count() >= 1, "no page heading"
    assert page.locator(".bd-sidebar-primary nav a").count() >= 2, "sidebar navigation missing"
    listed = page.evaluate(
        "Array.from(document.querySelectorAll('.bd-sidebar-primary nav.bd-links a'))"
        ".map(a => a.href.split('#')[0].replace(/\\.html$/, ''))"
    )
    expected = [(HTML / p).as_uri() for p in PAGES[1:]]
    assert [h for h in listed if h in expected] == expected, (
        "sidebar: pages missing or out of order"
    )
    broken = page.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.src)"
    )
    assert broken == [], f"broken images: {broken}"
    if page.locator(".math").count():
        raw = page.evaluate(
            "Array.from(document.querySelectorAll('.math')).filter("
            "e => !e.querySelector('mjx-container') && e.tagName !== 'MJX-CONTAINER').length"
        )
        assert raw == 0, f"{raw} maths elements were left untypeset"
    if page_name in WIDGET_CHAPTERS:
        page.wait_for_selector(".widget-slider, .jupyter-widgets .widget-hslider", timeout=15000)
        assert page.locator(".jupyter-widgets").count() >= 1
        figures = page.evaluate(
            "Array.from(document.querySelectorAll('.jupyter-widgets img'))"
            ".filter(i => i.complete && i.naturalWidth > 0).length"
        )
        assert figures >= 1, "the explorer's widgets render without their figure"
    if page_name in CHAPTERS:
        links = page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.href)")
        launch = [h for h in links if "colab.research.google.com" in h or "mybinder.org" in h]
        if REPOSITORY_URL:
            assert any("colab.research.google.com" in h for h in launch), "no Colab launch link"
            assert any("mybinder.org" in h for h in launch), "no Binder launch link"
        else:
            assert launch == [], "launch links without a configured repository.url"
    assert o.blocked == [], f"{len(o.blocked)} requests tried to leave the machine: {o.blocked[:5]}"
    assert o.missing == [], f"files the page asks for are missing from the build: {o.missing[:5]}"
    assert o.errors == [], f"console errors: {o.errors[:5]}"
    clipped = page.evaluate(_CLIPPED_PRE_JS)
    assert clipped == [], f"{len(clipped)} code/output blocks cut off: {clipped[:3]}"
    raw_tables = page.evaluate(_RAW_TABLES_JS)
    assert raw_tables == [], f"Markdown tables rendered as text: {raw_tables[:3]}"


@pytest.mark.parametrize("page_name", PAGES)
def test_page_fits_a_phone(opened, page_name):
    """390 px: nothing wider than the screen (no sideways scrolling), no console error."""
    o = opened(page_name, PHONE)
    o.screenshot(page_name, PHONE)
    report = o.page.evaluate(_TOO_WIDE_JS)
    assert report["wide"] == [], f"{len(report['wide'])} elements wider than {PHONE} px: " + (
        "; ".join(report["wide"][:4])
    )
    assert report["page"] <= report["vw"], f"the page scrolls sideways: {report['page']} px"
    assert o.errors == [], f"console errors: {o.errors[:5]}"


@pytest.mark.parametrize("page_name", [p for p in CHAPTERS if _show_source_calls(p)])
def test_show_source_is_collapsed(opened, page_name):
    """Every library listing is a closed dropdown titled with its name, docstring as text."""
    page = opened(page_name).page
    listings = page.evaluate(
        "Array.from(document.querySelectorAll('details.rcnn-source')).map(d => ({open: d.open,"
        " summary: d.querySelector('summary').textContent, text: d.textContent}))"
    )
    assert len(listings) == _show_source_calls(page_name), "show_source output not collapsed"
    for listing in listings:
        assert not listing["open"], f"{listing['summary']} is expanded"
        assert listing["summary"].startswith("Source of "), listing["summary"]
        raw = re.findall(r"``|:(?:func|class|meth|attr|mod):`", listing["text"])
        assert raw == [], f"{listing['summary']}: raw reST markup {raw[:3]}"


@pytest.mark.parametrize("width", [PHONE, DESKTOP])
@pytest.mark.parametrize("page_name", [PAGES[0], CHAPTERS[0]])
def test_sidebar_opens_and_closes(opened, page_name, width):
    """The chapter list can be opened on a phone and collapsed on a desktop, and back."""
    page = opened(page_name, width).page

    def shown() -> bool:
        return page.evaluate(
            "() => { const s = document.querySelector('.bd-sidebar-primary');"
            " const r = s.getBoundingClientRect();"
            " return getComputedStyle(s).visibility !== 'hidden' && r.right > 10 && r.left >= -1; }"
        )

    toggle = page.locator("button.primary-toggle:visible").first
    initially = shown()
    assert initially == (width >= 992), f"sidebar shown={initially} at {width} px"
    toggle.click()
    page.wait_for_timeout(500)
    assert shown() != initially, f"the sidebar button does nothing at {width} px"
    if initially:
        toggle.click()
    else:  # a phone: the opened drawer closes by tapping the dimmed page beside it
        page.mouse.click(width - 10, 450)
    page.wait_for_timeout(500)
    assert shown() == initially, f"the sidebar does not close again at {width} px"
    if width == PHONE and page_name == PAGES[0]:
        toggle.click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '_')}_{width}_sidebar.png"))


def test_header_has_one_search_and_an_unbroken_title(opened):
    page = opened(CHAPTERS[0]).page
    searches = page.evaluate(
        "Array.from(document.querySelectorAll('.search-button, .search-button-field'))"
        ".filter(e => e.getBoundingClientRect().width > 0"
        " && getComputedStyle(e).visibility !== 'hidden').length"
    )
    assert searches == 1, f"{searches} search buttons in view"
    # "R-CNN" must sit on one line (it used to wrap as "Faster R-" / "CNN"), whatever the font
    # and the sidebar's width: narrow the title step by step and look for a width that splits it
    splits = page.evaluate(
        """() => { const t = document.querySelector('.navbar-brand .logo__title');
        const node = Array.from(t.childNodes).find(n => n.nodeType === 3 && /R.CNN/.test(n.data));
        const range = document.createRange(); const at = node.data.search(/R.CNN/);
        range.setStart(node, at); range.setEnd(node, at + 5);
        const split = [];
        for (let width = 320; width >= 80; width -= 4) {
          t.style.width = `${width}px`;
          const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
          if (tops.size > 1) split.push(width);
        }
        t.style.width = ''; return split; }"""
    )
    assert splits == [], f"the book title breaks inside 'R-CNN' at widths {splits[:5]} px"


def test_intro_has_no_placeholder_and_no_unlinked_chapters(opened):
    page = opened(PAGES[0]).page
    text = page.evaluate("document.querySelector('.bd-article').innerText")
    assert "<this repository>" not in text
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('.bd-article table tbody tr'))"
        ".map(r => [r.cells[0].textContent.trim(), r.cells[1].querySelectorAll('a').length])"
    )
    assert rows, "the chapter map is missing"
    unlinked = [number for number, links in rows if links == 0]
    assert unlinked == [], f"chapters listed without a link: {unlinked}"


@pytest.mark.parametrize("page_name", FRAME_CHAPTERS)
def test_static_explorer_switches_its_figure(opened, page_name):
    """Without a kernel: clicking another pre-drawn setting shows another figure."""
    page = opened(page_name, PHONE).page
    frames = page.locator(".rl-frames").first
    frames.scroll_into_view_if_needed()

    def visible_figure() -> list[int]:
        """hash() of each shown picture's data (normally one)."""
        sources = frames.evaluate(
            "f => Array.from(f.querySelectorAll('img.rl-frame'))"
            ".filter(i => getComputedStyle(i).display !== 'none').map(i => i.src)"
        )
        return [hash(src) for src in sources]

    before = visible_figure()
    assert len(before) == 1, f"{len(before)} figures shown at once"
    labels = frames.locator("label")
    assert labels.count() >= 2, "fewer than two settings to switch between"
    labels.nth(labels.count() - 1).click()
    page.wait_for_timeout(200)
    after = visible_figure()
    assert len(after) == 1 and after != before, "clicking a setting did not switch the figure"
    frames.screenshot(path=str(SHOTS / f"{page_name.replace('/', '_')}_{PHONE}_frames.png"))


def test_some_chapters_have_deep_dives():
    assert len(DEEP_DIVE_CHAPTERS) >= 4, f"deep dives only in {DEEP_DIVE_CHAPTERS}"


@pytest.mark.parametrize("page_name", DEEP_DIVE_CHAPTERS)
def test_deep_dives_are_collapsed(opened, page_name):
    """A newcomer reads past the implementation internals: deep dives start closed."""
    page = opened(page_name).page
    dives = page.evaluate(
        "Array.from(document.querySelectorAll('.bd-article details'))"
        ".filter(d => /Deep dive/.test(d.querySelector('summary').textContent))"
        ".map(d => ({open: d.open, height: d.getBoundingClientRect().height,"
        " title: d.querySelector('summary').textContent.trim().slice(0, 60)}))"
    )
    assert dives, "no deep-dive dropdown in the page"
    opened_ones = [d["title"] for d in dives if d["open"]]
    assert opened_ones == [], f"deep dives shown expanded: {opened_ones}"
    assert all(d["height"] < 120 for d in dives), f"a closed deep dive takes room: {dives}"
