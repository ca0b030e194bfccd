"""The README's "Add to an existing Superset": its snippets name what the package really provides (the browser
path is followed word for word by ``tests/e2e/test_stock_superset.py``)."""

from __future__ import annotations

import importlib.util
import re
from datetime import timedelta

from .scripts import REPO

SECTION = "## Add to an existing Superset"


def section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"\n{SECTION}\n")
    return readme[start:readme.index("\n## ", start + 1)]


def test_the_celery_beat_entry_to_merge_runs_the_sync_task() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", section(), re.S)
    namespace: dict = {}
    exec(block, namespace)  # noqa: S102 - the README's own snippet
    config = namespace["CeleryConfig"]
    assert "shillelagh_amplitude.superset.tasks" in config.imports
    tasks = (REPO / "connector/shillelagh_amplitude/superset/tasks.py").read_text()
    entry = config.beat_schedule["amplitude-sync"]
    assert f'TASK_NAME = "{entry["task"]}"' in tasks
    assert entry["schedule"] == timedelta(minutes=15) and entry["options"]["expires"] == 900


def test_the_optional_settings_name_real_things() -> None:
    text = section()
    assert importlib.util.find_spec("shillelagh_amplitude.superset.logs") is not None
    from shillelagh_amplitude.superset import logs

    assert "`shillelagh_amplitude.superset.logs.install()`" in text and callable(logs.install)
    assert "`download_budget_s=20` | the connection's Additional Parameters" in text
    assert "amplitude-sync --days 30" in text
