"""Thin Prefect task wrappers around finetune_core, plus MLflow tracking at the edges."""
