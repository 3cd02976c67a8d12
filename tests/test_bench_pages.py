"""The benchmark pages in docs/benchmarks/ are what ``python -m bench.pages`` writes from the
results files now, and every results file is cited by a page (numbers live in one place)."""

from __future__ import annotations

import json

import pytest

from bench import pages
from bench.paths import REPO, RESULTS

# Issue 40 owns the precision measurements and writes docs/benchmarks/precision.md by hand.
OWNED_ELSEWHERE = ("precision",)


def test_the_pages_are_what_the_generator_writes_now():
    stale = [str(path.relative_to(REPO)) for path in pages.stale_pages()]
    assert not stale, f"stale benchmark pages {stale}: run `python -m bench.pages` and commit them"


def test_every_results_file_is_cited_by_a_page():
    texts = {path.name: path.read_text() for path in pages.DOCS.glob("*.md")}
    uncited = []
    for path in sorted(RESULTS.rglob("*.json")):
        relative = path.relative_to(RESULTS)
        if relative.parts[0].startswith(OWNED_ELSEWHERE):
            continue
        own_page = texts.get(f"{relative.parts[0]}.md", "") if len(relative.parts) == 2 else ""
        if f"`{path.name}`" not in own_page:
            uncited.append(str(relative))
    assert not uncited, (
        f"results files no page cites (give each folder a page.md, then `python -m bench.pages`): {uncited}"
    )


def test_a_value_placeholder_reads_the_number_from_its_file(tmp_path, monkeypatch):
    folder = tmp_path / "results" / "demo"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"ours": {"accuracy": 0.8956}, "runs": [{"seconds": 12.0}]}))
    (folder / "page.md").write_text(
        "# Demo\n<!-- headline: {{ run.json | ours/accuracy | .3f }} -->\n\n"
        "In {{ run.json | runs/0/seconds | .0f }} s.\n\n{{ table values }}\n"
    )
    monkeypatch.setattr(pages, "RESULTS", tmp_path / "results")
    text = pages.render(folder)
    assert "**Headline:** 0.896" in text and "In 12 s." in text
    assert "| `run.json` | ours / accuracy | 0.8956 |" in text
    assert "| `run.json` | not recorded | not recorded | not recorded | not recorded |" in text
    assert pages.page_summary("demo.md", text) == ("Demo", "0.896")


def test_a_table_glob_that_matches_no_file_is_an_error(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    (folder / "page.md").write_text("# Demo\n\n{{ table values missing-*.json }}\n")
    with pytest.raises(ValueError, match="missing-"):
        pages.render(folder)


def test_the_index_lists_pages_written_by_hand(tmp_path):
    index = pages.render_index({"a.md": "# A page\n\n**Headline:** 1.31×\n", "hand.md": "# By hand\n\nIt ran. Then…"})
    assert "| [A page](a.md) | 1.31× |" in index
    assert "| [By hand](hand.md) | It ran |" in index


def test_bench_scripts_run_as_modules_without_the_test_suite():
    """`python -m bench.NAME` from the repository root: no sys.path edits, no imports of `tests`."""
    offending = []
    for path in sorted((REPO / "bench").glob("*.py")):
        if path.name.startswith(OWNED_ELSEWHERE):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "sys.path" in line or line.lstrip().startswith(("from tests", "import tests")):
                offending.append(f"{path.name}:{number}: {line.strip()}")
    assert not offending, offending
