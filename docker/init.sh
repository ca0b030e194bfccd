#!/usr/bin/env bash
# One-shot initialisation (docker compose's superset-init service): metadata DB, roles, admin, dashboard.
# The same commands as scripts/demo.py and the end-to-end tests. Safe to re-run.
set -euo pipefail

superset db upgrade
superset fab create-admin --username "${ADMIN_USERNAME:-admin}" --firstname Superset --lastname Admin \
    --email "${ADMIN_EMAIL:-admin@localhost}" --password "${ADMIN_PASSWORD:?set ADMIN_PASSWORD in docker/.env}"
superset init
superset import-dashboards -p /app/amplitude/session_length_dashboard.zip -u "${ADMIN_USERNAME:-admin}"
# SQL Lab queries of the Amplitude connections run on the Celery workers (long downloads leave the web tier)
python -m shillelagh_amplitude.superset.tasks enable-async
