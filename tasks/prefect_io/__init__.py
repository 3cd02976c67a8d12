"""Prefect run logging and artifacts used by the tasks and the command line (no Prefect tasks)."""
