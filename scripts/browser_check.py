"""Open every page of the built book in headless Chromium, offline, and report what is broken.

A page fails on: a console error, a request that failed or tried to leave localhost, an image
that did not load, a link to a page or anchor of the book that does not exist, a formula that
MathJax did not typeset, or an empty page. Screenshots of the landing page and of one
chapter page go to ``_build/screenshots/``.

    python scripts/browser_check.py _build/html
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import re
import socketserver
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # pages are checked several at a time: keep the tabs in the background at full speed
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
BATCH = 8
# Playwright waits 30 s by default; a batch of pages on a busy 2-core CI machine (another test
# worker executing notebooks beside it) can take longer than that to go network-idle.
PAGE_TIMEOUT_MS = 180_000
"""Pages loaded at once: their loads and network-idle waits overlap (one at a time, the
0.5 s idle wait of each of ~180 pages made the check take minutes)."""
SKIP_PAGES = {"search.html", "genindex.html"}
ID_RE = re.compile(r'\bid="([^"]+)"')

PAGE_STATE_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const main = document.querySelector('main') || document.body;
  const mathNodes = Array.from(document.querySelectorAll('.math'));
  const untypeset = mathNodes.filter(n => !n.querySelector('mjx-container')).map(n => n.textContent.slice(0, 60));
  const images = Array.from(document.images).filter(i => i.closest('main'))
      .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const links = Array.from(document.querySelectorAll('main a[href]')).map(a => a.getAttribute('href'));
  return {text: main.innerText.trim().length, math: mathNodes.length, untypeset, images, links};
}
"""


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on a free localhost port; yield the base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def pages(html: Path) -> list[Path]:
    return sorted(
        p for p in html.rglob("*.html") if p.name not in SKIP_PAGES and "_static" not in p.parts
    )


def check_link(page: Path, href: str, html: Path) -> str | None:
    """Why an internal link from ``page`` is broken, or ``None``."""
    parsed = urlparse(href)
    if parsed.scheme in ("http", "https", "mailto") or href.startswith("javascript:"):
        return None
    target, anchor = urldefrag(href)
    path = page if not target else (page.parent / unquote(target)).resolve()
    if path.is_dir():
        path = path / "index.html"
    if not path.exists():
        return f"link to missing file {href}"
    if html not in path.parents and path != html:
        return f"link outside the book {href}"
    if (
        anchor
        and path.suffix == ".html"
        and anchor not in ID_RE.findall(path.read_text(errors="replace"))
    ):
        return f"link to missing anchor {href}"
    return None


def check(html: Path, screenshots: Path | None = None, chapter: str | None = None) -> list[str]:
    """Problems found in the book built at ``html`` (empty when everything renders)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with serve(html) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(PAGE_TIMEOUT_MS)

        def route(route_obj) -> None:  # block anything that is not our local server
            if route_obj.request.url.startswith(base):
                route_obj.continue_()
            else:
                problems.append(f"request to the network blocked: {route_obj.request.url}")
                route_obj.abort()

        context.route("**/*", route)
        all_pages = pages(html)
        if not all_pages:
            return [f"no HTML pages under {html}"]
        chapter_page = (html / chapter).resolve() if chapter else None
        visits = [("landing", html / "index.html")] + [(None, path) for path in all_pages]

        def open_page(path: Path) -> tuple[Any, list[str]]:
            page = context.new_page()
            errors: list[str] = []
            page.on(
                "console",
                lambda msg, errors=errors: errors.append(msg.text) if msg.type == "error" else None,
            )
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            page.on(
                "requestfailed",
                lambda req, errors=errors: errors.append(f"failed request {req.url}"),
            )
            # returns once the navigation starts: the browser loads the batch's pages at once
            page.goto(base + path.relative_to(html).as_posix(), wait_until="commit")
            return page, errors

        for start in range(0, len(visits), BATCH):
            batch = visits[start : start + BATCH]
            opened = [open_page(path) for _, path in batch]
            for (shot_name, _), (page, errors) in zip(batch, opened, strict=True):
                page.wait_for_load_state("load")
                page.wait_for_load_state("networkidle")  # follows the landing page's redirect
                rel = page.url.removeprefix(base).split("#")[0]
                path = html / unquote(rel)
                state = page.evaluate(PAGE_STATE_JS)
                problems += [f"{rel}: console error: {e}" for e in errors]
                problems += [f"{rel}: image did not load: {src}" for src in state["images"]]
                problems += [f"{rel}: formula not typeset: {t!r}" for t in state["untypeset"]]
                if state["text"] < 100:
                    problems.append(f"{rel}: page looks empty ({state['text']} characters of text)")
                real = path.resolve()
                for href in state["links"]:
                    reason = check_link(real, href, html.resolve())
                    if reason:
                        problems.append(f"{rel}: {reason}")
                if shot_name is None and real == chapter_page:
                    shot_name = "chapter"
                if screenshots is not None and shot_name is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshots / f"{shot_name}.png"), full_page=False)
                page.close()
        browser.close()
    return sorted(set(problems))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("html", type=Path, nargs="?", default=ROOT / "_build" / "html")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--chapter", default="book/02-principles/kd-loss.html")
    args = parser.parse_args()
    problems = check(args.html, args.screenshots, args.chapter)
    for problem in problems:
        print(problem)
    print(
        f"{len(pages(args.html))} pages checked, {len(problems)} problems; screenshots in {args.screenshots}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
