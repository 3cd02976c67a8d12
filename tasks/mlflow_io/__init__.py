"""MLflow and registry I/O at the edges (no Prefect tasks): tracking, the tracking server,
registry lookups, and the pyfunc entry point copied into every logged model."""
