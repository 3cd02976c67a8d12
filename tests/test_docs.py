"""The documentation site: generated reference pages are current, every configuration field is described, the
architecture page names every module, and `mkdocs build --strict` passes (a broken link or a missing page fails)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from docs.gen import cli_reference, config_reference

REPO = Path(__file__).resolve().parents[1]
REGENERATE = "run `make docs-gen` (python -m docs.gen.config_reference; python -m docs.gen.cli_reference) and commit"


def test_every_configuration_field_has_a_description():
    missing = [key for key, field in config_reference.walk_fields() if not (field.description or "").strip()]
    assert not missing, f"configuration fields without a description (finetune_core/config/): {missing}"


def test_every_configuration_key_belongs_to_a_group():
    unassigned = []
    for key, _ in config_reference.leaf_fields():
        try:
            config_reference.audience(key)
        except KeyError:
            unassigned.append(key)
    assert not unassigned, f"keys without a group (AUDIENCE in docs/gen/config_reference.py): {unassigned}"


def test_the_configuration_page_is_what_the_generator_writes_now():
    page = config_reference.PAGE
    assert page.read_text() == config_reference.render(), f"{page} is stale: {REGENERATE}"


def test_the_configuration_page_lists_every_key_once():
    page = config_reference.PAGE.read_text()
    keys = [key for key, _ in config_reference.leaf_fields()]
    counts = {key: page.count(f"| `{key}` |") for key in keys}
    assert all(count == 1 for count in counts.values()), {k: c for k, c in counts.items() if c != 1}


def test_the_cli_page_is_what_the_generator_writes_now():
    assert cli_reference.PAGE.read_text() == cli_reference.render(), f"{cli_reference.PAGE} is stale: {REGENERATE}"


def _cells(row: str) -> int:
    """Cells of a Markdown table row: pipes outside code spans that are not escaped."""
    outside = row.split("`")[::2]
    return sum(part.replace("\\|", "").count("|") for part in outside) - 1


def test_every_generated_table_row_has_its_columns():
    for page in (config_reference.PAGE, cli_reference.PAGE):
        rows = [line for line in page.read_text().splitlines() if line.startswith("|")]
        widths = {_cells(row) for row in rows if not row.startswith("|---")}
        assert len(widths) == 1, f"{page}: rows with {sorted(widths)} cells (an unescaped | in a cell?)"


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts)


def test_the_architecture_page_names_every_module():
    """The layout drifted once (seven modules missing): each module is named in its package's section."""
    page = (REPO / "docs" / "architecture.md").read_text()
    sections = {}
    for block in page.split("\n## ")[1:]:
        heading, _, body = block.partition("\n")
        sections[heading] = body
    missing = []
    for package in ("finetune_core", "tasks", "flows"):
        for path in _modules(package):
            relative = path.relative_to(REPO)
            folder = f"{relative.parent.as_posix()}/"
            named = [body for heading, body in sections.items() if f"`{folder}`" in heading]
            nested = f"`{relative.relative_to(relative.parts[0]).as_posix()}`"
            if not any(f"`{path.name}`" in body or nested in body for body in named):
                missing.append(relative.as_posix())
    assert not missing, f"docs/architecture.md does not name {missing}: add a row to its package's table"


def test_mkdocs_builds_the_site_strictly(tmp_path):
    """Every nav entry exists, every link and anchor resolves; the configuration reference renders as tables and
    the search index is written."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    configuration = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    assert configuration.count("<table>") == len(config_reference.GROUPS) + 1  # and the retired keys'
    assert "<code>training.unfrozen.learning_rate</code>" in configuration
    assert (tmp_path / "site" / "search" / "search_index.json").stat().st_size > 0


def test_the_readme_is_a_front_door_whose_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "README.md is the front door: keep it under 250 lines, move detail to docs/"
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [target for target in targets if "://" not in target]
    assert local, "no relative links found: the pattern no longer matches the README's links"
    missing = [target for target in local if not (REPO / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
