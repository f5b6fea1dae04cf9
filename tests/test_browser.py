"""The built site in a real browser: Playwright driving Debian's Chromium, headless, over localhost.

Every page of the table of contents loads without a traceback or a failed execution, its figures
are there and have loaded, next/previous navigation walks the table of contents, and each chapter's
Colab launch link opens that chapter's notebook in the repository. The mathematics is typeset by the
MathJax the site itself serves (no request leaves the site), the labelled equations are numbered
and referenced, and the scorecard's marks are words that any font draws. Skips, saying why, only
when no browser can be had.
"""
from __future__ import annotations

import functools
import inspect
import io
import json
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from booksite import ROOT, build_site
from mcutils import reproduce, theory

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = reproduce.toc_docs(ROOT)
NOTEBOOK_DOCS = {p.doc for p in reproduce.toc_notebooks(ROOT)}
FAILURE_MARKERS = ["Traceback (most recent call last)", "An Exception was encountered", "PapermillExecutionError"]
MATH_DOCS = ["book/01_theory", "book/02_discrete_chain", "book/03_gaussian"]  # chapters with labelled equations
RAW_TEX = ["\\(", "\\)", "\\[", "\\]", "$$", "\\begin{", "\\frac", "\\mathbb"]


def find_chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser"), shutil.which("google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site_url():
    site = build_site()  # its warnings are test_build's business; here, the pages as built
    if not (site.html / "index.html").is_file():
        pytest.fail("the book did not build (see test_build):\n" + site.log[-2000:])
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site.html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (/usr/bin/chromium, chromium, google-chrome, or $CHROMIUM): "
                    "install it with `apt-get install chromium`; `make setup` tries to")
    manager = sync_api.sync_playwright().start()
    try:
        browser = manager.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
    except Exception as exc:  # a browser that cannot start is no browser
        manager.stop()
        pytest.skip(f"Chromium at {executable} did not start: {str(exc).splitlines()[0]}")
    yield browser
    browser.close()
    manager.stop()


@pytest.fixture
def page(browser, site_url):
    """A page that may only reach the local site (the build must not need the network)."""
    context = browser.new_context()
    context.route(lambda url: not url.startswith(site_url), lambda route: route.abort())
    failures: list[str] = []
    page = context.new_page()
    page.on("response", lambda r: failures.append(f"{r.status} {r.url}")
            if r.url.startswith(site_url) and r.status >= 400 else None)
    page.on("requestfailed", lambda r: failures.append(f"failed {r.url}") if r.url.startswith(site_url) else None)
    page.local_failures = failures
    yield page
    context.close()


def expected_images(doc: str) -> int:
    """How many image outputs the committed notebook shows (each should be an <img> on its page)."""
    if doc not in NOTEBOOK_DOCS:
        return 0
    nb = json.loads((ROOT / f"{doc}.ipynb").read_text(encoding="utf-8"))
    return sum(any(k.startswith("image/") for k in o.get("data", {}))
               for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def colab_link(doc: str) -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    slug = repo["url"].rstrip("/").removesuffix(".git").split("github.com/")[1]
    prefix = (repo.get("path_to_book") or "").strip("/")
    path = f"{prefix}/{doc}.ipynb" if prefix else f"{doc}.ipynb"
    return f"{config['launch_buttons']['colab_url'].rstrip('/')}/github/{slug}/blob/{repo['branch']}/{path}"


@pytest.mark.parametrize("doc", DOCS)
def test_page_loads_with_its_figures_and_no_failure(page, site_url, doc):
    response = page.goto(f"{site_url}/{doc}.html")
    assert response is not None and response.status == 200, f"{doc}: HTTP {response and response.status}"
    assert page.locator("main h1").count() >= 1, f"{doc}: no title"
    text = page.locator("main").inner_text()
    for marker in FAILURE_MARKERS:
        assert marker not in text, f"{doc} shows {marker!r}"
    assert page.locator("main .output.error, main .output.traceback").count() == 0, f"{doc} shows an error output"
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                           ".map(i => i.currentSrc || i.src)")
    assert not broken, f"{doc}: images that did not load: {broken}"
    shown = page.locator("main .cell_output img").count()
    assert shown >= expected_images(doc), f"{doc}: {expected_images(doc)} figures in the notebook, {shown} on the page"
    assert "produced by the quick profile" in page.locator("footer.bd-footer-content").inner_text(), (
        f"{doc}: the footer does not say which profile produced the outputs")
    assert not page.local_failures, f"{doc}: requests to the site failed: {page.local_failures}"


def test_site_root_leads_to_the_introduction(page, site_url):
    page.goto(f"{site_url}/")
    page.wait_for_url(f"{site_url}/{DOCS[0]}.html")


def test_next_and_previous_walk_the_table_of_contents(page, site_url):
    page.goto(f"{site_url}/{DOCS[0]}.html")
    for doc in DOCS[1:]:
        page.locator("a.right-next").first.click()
        page.wait_for_url(f"{site_url}/{doc}.html")
    assert page.locator("a.right-next").count() == 0, "the last page has no next link"
    for doc in reversed(DOCS[:-1]):
        page.locator("a.left-prev").first.click()
        page.wait_for_url(f"{site_url}/{doc}.html")


@pytest.mark.parametrize("doc", sorted(NOTEBOOK_DOCS))
def test_colab_launch_link_opens_this_notebook(page, site_url, doc):
    page.goto(f"{site_url}/{doc}.html")
    links = page.locator("a[href*='colab.research.google.com']")
    assert links.count() >= 1, f"{doc}: no Colab launch link"
    assert links.first.get_attribute("href") == colab_link(doc)
    # the link sits in the launch menu (rocket icon): opening the menu shows it
    page.locator(".dropdown-launch-buttons button").first.click()
    assert links.first.is_visible(), f"{doc}: the Colab link does not show in the launch menu"


def typeset(page) -> None:
    """Wait until MathJax has typeset the page (it is loaded with ``defer``, then typesets asynchronously)."""
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")


@pytest.mark.parametrize("doc", MATH_DOCS)
def test_mathematics_is_typeset_by_the_sites_own_mathjax(page, site_url, doc):
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(site_url) else None)
    page.goto(f"{site_url}/{doc}.html")
    scripts = page.evaluate("Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s))")
    assert scripts and all(s.startswith(f"{site_url}/_static/mathjax/") for s in scripts), (
        f"{doc}: MathJax should come from the site's _static/mathjax/, not {scripts}")
    typeset(page)
    maths = page.locator("main .math")
    assert maths.count() > 0, f"{doc}: no mathematics on the page"
    untypeset = page.evaluate("Array.from(document.querySelectorAll('main .math'))"
                              ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80))")
    assert not untypeset, f"{doc}: {len(untypeset)} of {maths.count()} formulas left as LaTeX, e.g. {untypeset[:3]}"
    # among the formulas on screen (not those of the print-only headers, say), none is empty
    unsized = page.evaluate("Array.from(document.querySelectorAll('main mjx-container'))"
                            ".filter(e => e.getClientRects().length > 0 && e.getBoundingClientRect().width === 0).length")
    assert unsized == 0, f"{doc}: {unsized} typeset formulas take no room (fonts missing?)"
    prose = page.evaluate("""() => Array.from(document.querySelectorAll('main p, main li, main td, main th, main dd'))
        .filter(e => !e.closest('.cell_input, pre, code, mjx-container')).map(e => e.innerText).join('\\n')""")
    shown = [tex for tex in RAW_TEX if tex in prose]
    assert not shown, f"{doc}: raw LaTeX visible in the text: {shown}"
    errors = page.locator("main mjx-merror").count()
    assert errors == 0, f"{doc}: MathJax reports {errors} TeX errors"
    assert not outside, f"{doc}: requests left the site: {outside[:5]}"
    assert not page.local_failures, f"{doc}: requests to the site failed: {page.local_failures}"


@pytest.mark.parametrize("doc", MATH_DOCS)
def test_labelled_equations_are_numbered_and_referenced(page, site_url, doc):
    page.goto(f"{site_url}/{doc}.html")
    typeset(page)
    labels = page.evaluate("Array.from(document.querySelectorAll('main [id^=\"equation-eq-\"]')).map(e => e.id)")
    assert labels, f"{doc}: no labelled equations"
    for label in labels:
        number = page.evaluate("(id) => document.getElementById(id).querySelector('.eqno')?.firstChild?.textContent",
                               label) or ""
        assert number.startswith("(") and number.endswith(")"), f"{doc}: {label} has no number ({number!r})"
        refs = page.locator(f"main a.reference[href='#{label}']")
        assert refs.count() >= 1, f"{doc}: {label} is never referenced in the text"
        assert refs.first.inner_text().strip() == number, f"{doc}: a reference to {label} does not show {number}"


def test_every_page_loads_mathjax_from_the_site():
    """No browser needed: the pages name the bundled MathJax, which the build copied, and no CDN."""
    site = build_site()
    assert (site.html / "_static" / "mathjax" / "es5" / "tex-mml-chtml.js").is_file(), (
        "the site has no _static/mathjax/ (the Makefile's set-up installs it into _vendor/ with npm)")
    for doc in DOCS:  # Sphinx loads MathJax only on the pages with mathematics
        html = (site.html / f"{doc}.html").read_text()
        scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html, re.I)
        assert all("/_static/mathjax/es5/" in f"/{s}" and "://" not in s for s in scripts), (
            f"{doc}: MathJax is loaded from {scripts}, not the site's _static/mathjax/")
        assert scripts or 'class="math' not in html, f"{doc} has mathematics but loads no MathJax"
    assert all(re.findall(r'<script[^>]*src="[^"]*mathjax', (site.html / f"{doc}.html").read_text(), re.I)
               for doc in MATH_DOCS), "the chapters with equations load no MathJax"


def test_theory_docstrings_cite_equations_of_the_book():
    """Each ``eq-...`` that a docstring of mcutils.theory names is a labelled equation of a chapter."""
    site = build_site()
    cited = re.findall(r"``(eq-[a-z0-9-]+)``", inspect.getsource(theory))
    assert cited, "mcutils.theory cites no equation of the book"
    shown = {label for doc in MATH_DOCS
             for label in re.findall(r'id="equation-(eq-[a-z0-9-]+)"', (site.html / f"{doc}.html").read_text())}
    assert set(cited) <= shown, f"mcutils.theory cites equations the book does not have: {sorted(set(cited) - shown)}"


def holds_column(page) -> list[tuple[str, object]]:
    """(text, locator) of every cell of the scorecard tables' "holds" column."""
    cells = []
    for table in page.locator("main table").all():
        head = [th.strip() for th in table.locator("thead th").all_inner_texts()]
        if "holds" not in head:
            continue
        column = head.index("holds") + 1
        for cell in table.locator(f"tbody tr td:nth-child({column})").all():
            cells.append((cell.inner_text().strip(), cell))
    return cells


def test_scorecard_marks_are_words_that_show(page, site_url):
    page.goto(f"{site_url}/book/scorecard.html")
    cells = holds_column(page)
    assert cells, "the scorecard has no table with a 'holds' column"
    marks = {text for text, _ in cells}
    assert marks <= {"yes", "no"}, f"the scorecard marks claims with {sorted(marks - {'yes', 'no'})}, not yes/no"
    Image = pytest.importorskip("PIL.Image")
    # what the reader sees: each distinct mark, screenshot, has ink on it (a word in the page's font)
    for mark in sorted(marks):
        _, cell = next(c for c in cells if c[0] == mark)
        cell.scroll_into_view_if_needed()
        shot = Image.open(io.BytesIO(cell.screenshot())).convert("L")
        low, high = shot.getextrema()
        assert high - low > 100, f"the scorecard's {mark!r} mark shows no legible ink (grey levels {low}-{high})"
        width = page.evaluate("(e) => { const r = document.createRange(); r.selectNodeContents(e);"
                              " return r.getBoundingClientRect().width; }", cell.element_handle())
        assert width > 5, f"the scorecard's {mark!r} mark is {width:.1f} px wide"
