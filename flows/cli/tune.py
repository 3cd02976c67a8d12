"""`finetune tune CONFIG`: a hyperparameter search (flows.tune), then the winner trained, gated and
registered like any run. Exit codes as `finetune run`: 1 also when every trial failed (the message
carries the first error), 2 a bad space (it names the key), 3 the winner rejected by a gate."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from flows.cli.errors import load_config_printing_warnings, print_error, print_trace

console = Console(stderr=True)
EXIT_ERROR, EXIT_BAD_INPUT, EXIT_GATE, EXIT_TRACKING_DOWN = 1, 2, 3, 4  # as `finetune run`


def tune(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="YAML configuration file (its `search:` section)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a key: --set search.parallel=2."),
    trials: int | None = typer.Option(None, "--trials", min=1, help="Trials of the study in all (search.n_trials)."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", min=0.01, help="Start no trial after this many minutes (search.max_minutes)."
    ),
    trials_only: bool = typer.Option(
        False, "--trials-only", help="Only add trials to the shared study (another worker registers the winner)."
    ),
    summary_json: Path | None = typer.Option(None, "--summary-json", help="Write the sweep and the winner here."),
) -> None:
    """Search hyperparameters (Optuna trials as Prefect tasks, pruned by epoch), then train, gate and
    register the best configuration."""
    from finetune_core.config.tracking import credentials_to_environment
    from finetune_core.environment import apply_defaults
    from finetune_core.errors import UserInputError

    apply_defaults()
    from tasks.mlflow_io.tracking_server import TrackingUnavailable

    try:
        config = credentials_to_environment(load_config_printing_warnings(console, config_path, set_ or []))
        from finetune_core.search.space import resolve_space

        resolve_space(config)  # a bad space is exit 2 before any server starts
        from flows.cli.prefect_api import start_temporary_api, wait_for_api

        api = start_temporary_api()
        from flows.tune import tune as tune_flow

        wait_for_api(api)
        result = tune_flow(config, n_trials=trials, max_minutes=max_minutes, trials_only=trials_only)
    except UserInputError as exc:
        print_error(console, exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except TrackingUnavailable as exc:
        print_error(console, exc)
        raise typer.Exit(EXIT_TRACKING_DOWN) from None
    except Exception as exc:  # every trial failed, or a bug: keep the trace
        print_trace(console, exc)
        raise typer.Exit(EXIT_ERROR) from None
    _report(result, summary_json)


def _report(result, summary_json: Path | None) -> None:
    trials = ", ".join(f"{n} {state}" for state, n in result.trials.items() if n and state != "done")
    console.print(
        f"study {result.study}: {trials}; best trial {result.best_trial} "
        f"(validation {result.metric} {result.best_value:.4f}) {result.best_params}",
        highlight=False,
        soft_wrap=True,
    )
    winner = result.winner
    if winner is not None:
        console.print(
            f"registered {winner.registered_model} version {winner.model_version}: test "
            + ", ".join(f"{k} {v:.4f}" for k, v in winner.metrics.items() if k in ("accuracy", "f1_macro", "spearman")),
            highlight=False,
            soft_wrap=True,
        )
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(result.model_dump(mode="json"), indent=2), encoding="utf-8")
        console.print(f"summary written to {summary_json}", highlight=False, soft_wrap=True)
    if winner is not None and not winner.gate_passed:
        console.print("[bold yellow]gates failed[/]: " + "; ".join(winner.gate_reasons), highlight=False)
        raise typer.Exit(EXIT_GATE)
