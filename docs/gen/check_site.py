"""Open the built site in headless Chromium and check it rendered: the configuration reference and a benchmark page
show their tables, and the search index holds the reference pages.

Run after `mkdocs build`: ``python -m docs.gen.check_site [SITE_DIR]`` (``make docs-check`` builds, installs Debian's
``chromium`` when it is missing, then runs this). Exit 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from docs.gen import config_reference

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PageCheck:
    path: str  # under the site directory
    min_tables: int
    must_contain: tuple[str, ...]


def page_checks() -> list[PageCheck]:
    benchmarks = sorted(p.stem for p in (REPO / "docs" / "benchmarks").glob("*.md") if p.stem != "index")
    return [
        PageCheck(
            "reference/configuration/index.html",
            len(config_reference.GROUPS),
            ("<code>training.unfrozen.learning_rate</code>", 'data-md-component="search-query"'),
        ),
        PageCheck(f"benchmarks/{benchmarks[0]}/index.html", 1, ("<th>", 'data-md-component="search-query"')),
        PageCheck("benchmarks/index.html", 1, ("<th>page</th>",)),
    ]


def chromium_dom(url: str) -> str:
    """The page's DOM after its scripts ran, as headless Chromium dumps it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium not found: apt-get install chromium (make docs-check does)")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed on {url}: {done.stderr[-2000:]}")
    return done.stdout


def check_page(site: Path, check: PageCheck) -> list[str]:
    page = site / check.path
    if not page.exists():
        return [f"{check.path}: not built"]
    dom = chromium_dom(page.resolve().as_uri())
    problems = []
    tables = dom.count("<table")
    if tables < check.min_tables:
        problems.append(f"{check.path}: {tables} tables rendered, expected at least {check.min_tables}")
    # Material's JavaScript wraps every table in a scroll container: present only when the page's scripts ran
    wrapped = dom.count("md-typeset__scrollwrap")
    if wrapped < tables:
        problems.append(f"{check.path}: {wrapped} of {tables} tables wrapped by the theme's scripts")
    problems += [f"{check.path}: {text!r} not in the rendered page" for text in check.must_contain if text not in dom]
    print(f"{check.path}: {tables} tables ({wrapped} wrapped by the theme's scripts), {len(dom):,} characters of DOM")
    return problems


def check_search_index(site: Path) -> list[str]:
    index = site / "search" / "search_index.json"
    if not index.exists():
        return ["search/search_index.json: not built"]
    locations = {doc["location"].split("#")[0] for doc in json.loads(index.read_text())["docs"]}
    print(f"search/search_index.json: {len(locations)} pages indexed")
    wanted = ("reference/configuration/", "reference/cli/", "benchmarks/")
    return [f"search index lacks {page}" for page in wanted if page not in locations]


def main() -> None:
    site = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "site")
    problems = check_search_index(site)
    for check in page_checks():
        problems += check_page(site, check)
    for problem in problems:
        print(f"FAIL {problem}")
    print("site check: " + ("failed" if problems else "passed"))
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
