"""`python -m flows.cli`: the `finetune` command without its console script."""

from flows.cli.main import app

app()
