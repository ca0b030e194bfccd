"""SQL Lab's Celery task is resolved when the app starts (``FLASK_APP_MUTATOR``), not by its first callers."""

from __future__ import annotations

import subprocess
import sys

from ..scripts import REPO

PROBE = """
import os, sys, tempfile
os.environ["SUPERSET_HOME"] = tempfile.mkdtemp()
os.environ["SUPERSET_CONFIG_PATH"] = sys.argv[1]
from superset.app import create_app
create_app()
import superset.sql_lab
print(superset.sql_lab.get_sql_results.__evaluated__())
"""


def resolved_at_start(config: str) -> bool:
    """In a new process: whether SQL Lab's task proxy is resolved once ``create_app`` has returned."""
    result = subprocess.run([sys.executable, "-c", PROBE, config], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()[-1] == "True"


def test_the_project_config_resolves_sql_labs_task_at_start() -> None:
    assert resolved_at_start(str(REPO / "superset_config/superset_config.py"))


def test_superset_alone_leaves_it_to_the_first_calls(tmp_path) -> None:
    config = tmp_path / "stock_config.py"
    config.write_text(f"SECRET_KEY = {'s' * 42!r}\n")
    assert not resolved_at_start(str(config))
