"""Work the first tasks of a run would do, done while Prefect's temporary server boots.

A command-line run without ``PREFECT_API_URL`` waits several seconds for the temporary server it
started (``flows.cli.prefect_api``). Profiled on the demo (py-spy; docs/benchmarks/startup.md), the
first tasks then spend most of their time on one-off costs that do not depend on the flow having
started: importing Great Expectations and the backbone's model code, loading its tokenizer, and
opening (on a first run: creating and migrating) MLflow's SQLite store. ``warm_for`` pays them in
that wait instead; with a running server there is no wait, and nothing is warmed ahead.

Every step is best effort: a failure here (a backbone that does not load, a broken database) is
left for the task that does the work for real, which reports it with the usual message and exit
code. Imports happen in the calling thread: importing in two threads at once can hand one of them
a partially initialised module.
"""

from __future__ import annotations

import importlib
import logging

from finetune_core.config.finetune import FinetuneConfig

logger = logging.getLogger(__name__)


def warm_for(config: FinetuneConfig) -> None:
    """Import and open what the first tasks of ``config``'s run need; never raises."""
    for step in (_tracking_store, _validation, _backbone_code):
        try:
            step(config)
        except Exception as exc:  # noqa: BLE001 — the real step reports it; see the module docstring
            logger.debug("warm-up step %s skipped: %s", step.__name__, exc)


def _tracking_store(config: FinetuneConfig) -> None:
    """A SQLite store is created and migrated on first use (seconds on a new file). Only SQLite:
    a remote tracking server is cheap to open, and when it is down the flow's own first call
    gives the outage message without this one retrying first."""
    from finetune_core.config.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(config.mlflow.tracking_uri)  # as the flow resolves it
    if uri.startswith("sqlite:"):
        from mlflow import MlflowClient

        MlflowClient(uri).search_experiments(max_results=1)


def _validation(config: FinetuneConfig) -> None:
    if not config.validation.enabled:
        return
    import great_expectations  # noqa: F401 — seconds of imports, the validate task's first cost

    if config.validation.max_text_tokens:  # the token-length check loads the first candidate's tokenizer
        from transformers import AutoTokenizer

        from finetune_core.model.backbone import resolve_backbone

        path = resolve_backbone(config.backbone.candidates[0])
        AutoTokenizer.from_pretrained(path, trust_remote_code=config.backbone.trust_remote_code)


def _backbone_code(config: FinetuneConfig) -> None:
    """Import the modelling code of each candidate's architecture (``transformers`` imports a
    model family's module on first use, about 2 s for BERT here)."""
    from transformers import AutoConfig

    from finetune_core.model.backbone import resolve_backbone

    families = set()
    for candidate in config.backbone.candidates:
        model_config = AutoConfig.from_pretrained(
            resolve_backbone(candidate), trust_remote_code=config.backbone.trust_remote_code
        )
        families.add(model_config.model_type.replace("-", "_"))
    for family in sorted(families):
        importlib.import_module(f"transformers.models.{family}.modeling_{family}")
