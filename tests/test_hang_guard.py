"""Nothing hangs: pytest-timeout is active with the project's limit, and it fails a hung test with
a trace instead of letting it eat CI's time budget."""

from __future__ import annotations

import subprocess
import sys


def test_the_suite_has_a_per_test_time_limit(pytestconfig):
    assert 60 <= float(pytestconfig.getini("timeout")) <= 1800  # pyproject.toml, read by pytest-timeout


def test_a_hung_test_fails_with_a_trace(tmp_path):
    (tmp_path / "test_hangs.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(120)\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--timeout", "2", "test_hangs.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 1, done.stdout
    assert "Timeout" in done.stdout and "time.sleep(120)" in done.stdout
