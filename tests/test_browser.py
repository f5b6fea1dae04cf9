"""The built site in a real browser: Playwright driving Debian's Chromium, headless, over localhost.

Every page of the table of contents loads without a traceback or a failed execution, its figures
are there and have loaded, next/previous navigation walks the table of contents, and each chapter's
Colab launch link opens that chapter's notebook in the repository. Skips, saying why, only when no
browser can be had.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from booksite import ROOT, build_site
from mcutils import reproduce

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = reproduce.toc_docs(ROOT)
NOTEBOOK_DOCS = {p.doc for p in reproduce.toc_notebooks(ROOT)}
FAILURE_MARKERS = ["Traceback (most recent call last)", "An Exception was encountered", "PapermillExecutionError"]


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
