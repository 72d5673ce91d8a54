"""The documentation site: it builds with ``mkdocs build --strict`` (no warning, no broken
link or anchor), its generated reference covers every command and option with help, its home
page and a guide render with content in a real headless Chromium, and the READMEs stay short.
The examples on its pages run in tests/test_docs_examples.py."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chromium import headless_chromium, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
needs_mkdocs = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                                  reason="the docs extra is not installed "
                                         "(pip install -e '.[docs]'; make installs it)")


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not re.search(r"^(WARNING|ERROR)", done.stderr, re.M), done.stderr[-4000:]
    return out


@needs_mkdocs
def test_the_site_builds_strict_with_every_page(site):
    for page in ("index.html", "get-started/index.html", "guides/serving/index.html",
                 "reference/cli/index.html", "reference/records/index.html",
                 "reference/python-api/index.html", "zh/index.html", "benchmarks/index.html"):
        assert (site / page).stat().st_size > 2000, page
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "torchinfer predict classify" in cli and "--retina-masks" in cli


def test_every_command_and_option_has_help():
    docs = hooks()
    missing = []
    for path, command in docs.cli_commands():
        if not (command.help or "").strip():
            missing.append(path)
        missing += [f"{path} {'/'.join(o.opts)}" for o in docs.options_of(command)
                    if not (o.help or "").strip()]
        missing += [f"{path} {a.name}" for a in docs.arguments_of(command)
                    if not (getattr(a, "help", None) or "").strip()]
    assert not missing, f"without help text: {missing}"


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_the_readme_fits_on_a_screen_or_two(readme):
    lines = (ROOT / readme).read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"{readme}: {len(lines)} lines; move the rest into docs/"


def _tables(text: str) -> set[str]:
    """The header rows of the markdown tables in ``text``."""
    lines = text.splitlines()
    return {lines[i].strip() for i in range(len(lines) - 1)
            if lines[i].lstrip().startswith("|") and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1])}


def test_no_benchmark_table_is_both_in_the_readme_and_the_docs():
    readme = _tables((ROOT / "README.md").read_text(encoding="utf-8"))
    benchmarks = _tables((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"))
    for page in (ROOT / "docs").rglob("*.md"):
        benchmarks |= _tables(page.read_text(encoding="utf-8"))
    both = readme & benchmarks
    assert not both, f"tables in the README and in the docs: {sorted(both)}"


@pytest.fixture(scope="module")
def served_site(site):
    handler = partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@needs_mkdocs
@needs_chromium
@pytest.mark.parametrize("page, heading", [("", "torchinfer"),
                                           ("guides/serving/", "Serving")])
def test_a_page_renders_with_content_in_chromium(served_site, page, heading, tmp_path):
    from PIL import Image, ImageStat
    from selenium.webdriver.common.by import By

    with headless_chromium() as driver:
        driver.get(f"{served_site}/{page}")
        title = driver.find_element(By.CSS_SELECTOR, "article h1").text
        assert heading.lower() in title.lower(), title
        text = driver.find_element(By.CSS_SELECTOR, "article").text
        assert len(text) > 500, text[:200]
        # the navigation is drawn: the theme's stylesheet and script loaded from the site
        assert driver.find_elements(By.CSS_SELECTOR, "nav.md-nav"), "no navigation"
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
    image = Image.open(shot).convert("L")
    assert image.size[0] >= 1000
    # not a blank page: text and colour make the grey levels vary
    assert ImageStat.Stat(image).stddev[0] > 20, ImageStat.Stat(image).stddev
