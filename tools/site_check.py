"""Open the built website in headless Chromium and fail on what a reader would see broken.

    python tools/site_check.py [HTML_DIR]          # check a built site (default _build/html)

``make test`` runs it on the executed build that ``make book`` makes.

Pages: the index and every page of ``_toc.yml``. Each page is served from
localhost, loaded by Debian's ``chromium --headless --dump-dom`` after MathJax
has typeset it, and fails the check on:

* a page that does not load: HTTP error, a resource (script, style sheet,
  image) the page asks for that is missing, a JavaScript error;
* a MathJax error: ``mjx-merror`` elements ("Math input error", TeX syntax),
  undefined macros (MathJax marks them in red), or math left untypeset;
* a missing figure: an image that does not decode (``naturalWidth`` 0), or a
  chapter whose notebook draws figures but whose page shows none;
* a broken internal link: an ``href`` to a file that was not built, or to an
  anchor (``#id``) that the target page does not have.

Chromium: if it is missing and this runs as root with apt-get, the check
installs Debian's ``chromium``; where it cannot, it prints why and exits 0
(skipped). MathJax: the pages load it from a CDN; when the CDN cannot be
reached, the same MathJax 3 release is fetched once with npm
(``npm pack mathjax@3``) and served from localhost instead. Other external
resources (the widget manager, require.js) that fail to load only because
this machine has no internet are listed as not checked; a known harmless
console error of the toolchain (``KNOWN_UPSTREAM``) is listed with its reason.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.book_files import toc_files  # noqa: E402

CACHE = ROOT / "_build" / "site-check-cache"
MATHJAX_LOCAL = "/__site_check__/mathjax/"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--virtual-time-budget=10000", "--dump-dom"]
# Console errors that come from the book's toolchain, not from the book, with the reason
# each is harmless; they are reported but do not fail the check.
KNOWN_UPSTREAM = {
    "Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-thebe 0.3.1 registers its inline config script after the HTML builder starts, and "
        "Sphinx 7 then emits it twice; the first copy defines the constants, the second is rejected",
}
FIGURE_CODE = re.compile(r"plt\.show\(|plotting\.figure\(|\bfigure\(|explorer\(|\.savefig\(|plt\.subplots\(")

# Injected first in <head>: record load and script errors, then, once MathJax has
# typeset the page, write a JSON report into the DOM for --dump-dom to carry out.
PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target, url = t && t !== window && (t.src || t.href);
    if (url) {  // same-origin misses are in the server's log; report the others (CDN) here
      if (url.indexOf(location.origin) !== 0) errors.push('failed to load ' + url);
    } else errors.push('JavaScript error: ' + e.message + ' (' + e.filename + ':' + e.lineno + ')');
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('unhandled rejection: ' + e.reason); });
  window.addEventListener('load', function () {
    function report() {
      var q = function (s, root) { return Array.prototype.slice.call((root || document).querySelectorAll(s)); };
      var r = {
        errors: errors,
        mathjax: !!(window.MathJax && window.MathJax.startup && window.MathJax.startup.document),
        math: q('.math').length,
        typeset: q('mjx-container').length,
        untypeset: q('.math').filter(function (e) { return !e.querySelector('mjx-container'); })
          .map(function (e) { return e.textContent.slice(0, 120); }),
        merror: [], undefined_macros: [],
        broken_images: q('img').filter(function (i) { return !i.complete || i.naturalWidth === 0; })
          .map(function (i) { return i.getAttribute('src'); }),
        output_images: q('.cell_output img, .output img').length
      };
      if (r.mathjax) Array.from(MathJax.startup.document.math).forEach(function (m) {
        var root = m.typesetRoot;
        if (!root) return;
        q('mjx-merror', root).forEach(function (e) {
          r.merror.push((e.getAttribute('data-mjx-error') || 'Math input error') + ' in: ' + m.math);
        });
        if (q('[style*="color: red"], [style*="color:red"]', root).length) r.undefined_macros.push(m.math);
      });
      var pre = document.createElement('pre');
      pre.id = 'site-check-report';
      pre.textContent = JSON.stringify(r);
      document.body.appendChild(pre);
    }
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      MathJax.startup.promise.then(report, function (err) { errors.push('MathJax: ' + err); report(); });
    } else report();
  });
})();
</script>"""


# -- Chromium -----------------------------------------------------------------------------------

def find_chromium():
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


class Unavailable(Exception):
    """Chromium cannot run here; the message says why."""


def ensure_chromium() -> str:
    """Path to a working Chromium; installs Debian's package when missing (root only).

    Raises :class:`Unavailable` with the reason when there is none and none can be installed.
    """
    found = find_chromium()
    if not found:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise Unavailable("Chromium is not installed, and installing it needs root and apt-get "
                              "(run `apt-get install chromium` to enable this check).")
        print("Chromium not found: installing Debian's chromium package with apt-get ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
            except subprocess.TimeoutExpired:
                raise Unavailable(f"`{' '.join(cmd)}` timed out; Chromium could not be installed.") from None
            if proc.returncode != 0:
                raise Unavailable(f"`{' '.join(cmd)}` failed; Chromium could not be installed:\n{proc.stderr[-1500:]}")
        found = find_chromium()
        if not found:
            raise Unavailable("apt-get installed chromium but no chromium executable was found.")
    with tempfile.TemporaryDirectory() as profile:
        try:
            proc = subprocess.run([found, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                  capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"{found} does not start (timed out on about:blank).") from None
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise Unavailable(f"{found} does not run headless here:\n{proc.stderr[-1500:]}")
    return found


def chromium() -> str:
    """:func:`ensure_chromium`, or exit 0 with the reason (the check is skipped)."""
    try:
        return ensure_chromium()
    except Unavailable as why:
        print(f"SKIPPED site check: {why}")
        sys.exit(0)


def dump_dom(browser: str, url: str) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile per page: no cache, no state
        try:
            proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                                  capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            return -1, "", "timed out after 180 s"
    return proc.returncode, proc.stdout, proc.stderr


@functools.lru_cache(maxsize=None)
def reachable(url: str) -> bool:
    """Whether this machine can fetch ``url`` (external resources: CDNs)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10)
        return True
    except OSError:
        return False


# -- MathJax ------------------------------------------------------------------------------------

def mathjax_source(html_dir: Path):
    """(CDN URL used by the pages, local folder to serve instead or None)."""
    for page in html_dir.rglob("*.html"):
        match = re.search(r'<script[^>]+src="(https?://[^"]*mathjax[^"]*/(tex-[\w-]+\.js))"', page.read_text())
        if match:
            break
    else:
        return None, None
    url, name = match.groups()
    if reachable(url):
        return url, None  # the pages load it as readers do
    major = re.search(r"mathjax@(\d+)", url)
    spec = f"mathjax@{major.group(1) if major else 3}"
    folder = CACHE / spec
    if not (folder / "es5" / name).exists():
        if not shutil.which("npm"):
            return url, "unavailable"
        print(f"MathJax CDN unreachable: fetching {spec} with npm into {folder}", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "pack", spec, "--pack-destination", str(folder)],
                              capture_output=True, text=True, timeout=600)
        tarballs = sorted(folder.glob("mathjax-*.tgz"))
        if proc.returncode != 0 or not tarballs:
            print(proc.stderr[-1500:])
            return url, "unavailable"
        subprocess.run(["tar", "-xzf", str(tarballs[-1]), "-C", str(folder), "--strip-components=1", "package/es5"],
                       check=True)
    return url, folder / "es5"


# -- Serving ------------------------------------------------------------------------------------

class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site; injects the probe into HTML and maps the MathJax CDN to a local copy."""

    failed: list = []  # paths that got an HTTP error (list.append is atomic across threads)
    mathjax_url = None
    mathjax_dir = None

    def log_message(self, *args):
        pass

    def translate_path(self, path):
        clean = urllib.parse.urlsplit(path).path
        if self.mathjax_dir is not None and clean.startswith(MATHJAX_LOCAL):
            return str(Path(self.mathjax_dir) / clean[len(MATHJAX_LOCAL):])
        return super().translate_path(path)

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            result = super().send_head()
            if result is None:
                self.failed.append(self.path)
            return result
        text = path.read_text(encoding="utf-8")
        if isinstance(self.mathjax_dir, Path):
            text = text.replace(self.mathjax_url, MATHJAX_LOCAL + self.mathjax_url.rsplit("/", 1)[1])
        text = re.sub(r"<head([^>]*)>", lambda m: m.group(0) + PROBE, text, count=1)
        body = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the browser hung up before the answer, e.g. to its own request for /favicon.ico
        super().handle_error(request, client_address)


def serve(html_dir: Path, mathjax_url, mathjax_dir):
    Handler.mathjax_url, Handler.mathjax_dir = mathjax_url, mathjax_dir
    handler = functools.partial(Handler, directory=str(html_dir))
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- Links --------------------------------------------------------------------------------------

class Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def parse(text: str) -> Anchors:
    parser = Anchors()
    parser.feed(text)
    return parser


@functools.lru_cache(maxsize=None)
def file_ids(path: Path) -> frozenset:
    return frozenset(parse(path.read_text(encoding="utf-8", errors="replace")).ids)


def broken_links(page_url: str, dom: Anchors, html_dir: Path, base: str) -> list[str]:
    problems = []
    for href in sorted(set(dom.hrefs)):
        target = urllib.parse.urljoin(page_url, href)
        parts = urllib.parse.urlsplit(target)
        if parts.scheme not in ("http", "https") or not target.startswith(base):
            continue  # external (Colab, Binder, GitHub), mailto:, javascript:
        rel = urllib.parse.unquote(parts.path[len(urllib.parse.urlsplit(base).path):])
        path = html_dir / rel
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"broken link {href!r}: {rel} was not built")
        elif parts.fragment and path.suffix == ".html":
            fragment = urllib.parse.unquote(parts.fragment)
            here = urllib.parse.urlsplit(page_url).path == parts.path
            ids = dom.ids if here else file_ids(path)
            if fragment not in ids:
                problems.append(f"broken link {href!r}: {rel} has no anchor #{fragment}")
    return problems


# -- The check ----------------------------------------------------------------------------------

def pages() -> list[tuple[str, Path | None]]:
    """(html path relative to the site, notebook or None) for the index and every toc page."""
    found = [("index.html", None)]
    for entry in toc_files():
        notebook = ROOT / f"{entry}.ipynb"
        found.append((f"{entry}.html", notebook if notebook.exists() else None))
    return found


def draws_figures(notebook: Path) -> bool:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return any(c["cell_type"] == "code" and FIGURE_CODE.search("".join(c["source"])) for c in cells)


def check(html_dir: Path, site_pages=None, browser=None) -> int:
    """Check every page; print one line per page and its problems; return 1 if any failed."""
    html_dir = html_dir.resolve()
    site_pages = pages() if site_pages is None else site_pages
    if not (html_dir / "index.html").is_file():
        sys.exit(f"site check: {html_dir}/index.html does not exist; build the site first (make book)")
    browser = browser or chromium()
    mathjax_url, mathjax_dir = mathjax_source(html_dir)
    if mathjax_dir == "unavailable":
        print(f"WARNING: MathJax could not be loaded ({mathjax_url} unreachable, npm unavailable): "
              "math is NOT checked on this run.")
    server = serve(html_dir, mathjax_url, mathjax_dir)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    failures, notes = 0, set()
    try:
        for rel, notebook in site_pages:
            Handler.failed.clear()
            url = base + rel
            problems = []
            if not (html_dir / rel).is_file():
                problems.append("page was not built")
            else:
                code, dom_text, stderr = dump_dom(browser, url)
                match = re.search(r'<pre id="site-check-report"[^>]*>(.*?)</pre>', dom_text, re.S)
                if code != 0 or not match:
                    problems.append(f"page did not finish loading (chromium exit {code}): {stderr[-800:]}")
                else:
                    report = json.loads(html.unescape(match.group(1)))
                    for error in report["errors"]:
                        known = next((why for text, why in KNOWN_UPSTREAM.items() if text in error), None)
                        external = re.match(r"failed to load (https?://\S+)", error)
                        if external and not reachable(external.group(1)):
                            notes.add(f"not checked: {external.group(1)} is unreachable from this machine "
                                      "(no internet); readers' browsers load it from the web")
                        elif known:
                            notes.add(f"{error.split(' (http')[0]}: known upstream, harmless ({known})")
                        else:
                            problems.append(error)
                    problems += [f"resource not served: {r}" for r in Handler.failed
                                 if not r.startswith("/favicon.ico")]
                    if mathjax_dir != "unavailable" and report["math"]:
                        if not report["mathjax"]:
                            problems.append("MathJax did not load")
                        else:
                            problems += [f"math not typeset by MathJax: {m}" for m in report["untypeset"]]
                    problems += [f"MathJax error: {m}" for m in report["merror"]]
                    problems += [f"undefined TeX macro (shown in red) in: {m}" for m in report["undefined_macros"]]
                    problems += [f"image does not load: {src}" for src in report["broken_images"]]
                    if notebook is not None and draws_figures(notebook) and not report["output_images"]:
                        problems.append(f"{notebook.name} draws figures but the page shows none")
                    problems += broken_links(url, parse(dom_text), html_dir, base)
                    summary = (f"{report['typeset']} formulas, {report['output_images']} output figures, "
                               f"{len(set(parse(dom_text).hrefs))} links")
            status = "FAIL" if problems else "ok  "
            print(f"{status} {rel}" + ("" if problems else f"  ({summary})"))
            for p in problems:
                print(f"       - {p}")
            failures += bool(problems)
    finally:
        server.shutdown()
    for note in sorted(notes):
        print(f"note: {note}")
    print(f"site check: {failures} of {len(site_pages)} pages with problems")
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", nargs="?", type=Path, default=ROOT / "_build" / "html",
                        help="built site (default: _build/html, from `make book`)")
    args = parser.parse_args(argv)
    return check(args.html)


if __name__ == "__main__":
    sys.exit(main())
