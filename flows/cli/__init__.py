"""The `finetune` command line: one module per command, and what the commands share.

`flows.cli:app` is the console script (pyproject.toml [project.scripts]).
"""

from flows.cli.main import app

__all__ = ["app"]
