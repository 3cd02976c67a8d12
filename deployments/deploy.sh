#!/usr/bin/env bash
# Create the process work pool and deploy every deployment in prefect.yaml.
# Needs PREFECT_API_URL pointing at a Prefect server (e.g. `prefect server start`).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT="${PREFECT:-.venv/bin/prefect}"
: "${PREFECT_API_URL:?set PREFECT_API_URL to your Prefect server, e.g. http://127.0.0.1:4200/api}"
"$PREFECT" work-pool inspect finetune-process >/dev/null 2>&1 \
  || "$PREFECT" work-pool create finetune-process --type process
"$PREFECT" --no-prompt deploy --all
echo "Start a worker with: $PREFECT worker start --pool finetune-process"
