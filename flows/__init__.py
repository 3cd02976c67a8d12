"""Prefect flows: the pipeline's DAG. Importing them applies the program's environment defaults."""

from finetune_core.environment import apply_defaults

apply_defaults()
