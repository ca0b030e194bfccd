"""Superset in-process, for unit tests of the engine spec and the bundle.

Superset reads ``SUPERSET_CONFIG_PATH`` when ``superset.config`` is first imported, so it is set here, when
pytest loads this file and before any test module of this folder imports Superset.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from ..scripts import REPO

os.environ["SUPERSET_HOME"] = tempfile.mkdtemp(prefix="superset-unit-")
os.environ["SUPERSET_CONFIG_PATH"] = str(REPO / "superset_config" / "superset_config.py")


@pytest.fixture(scope="session")
def superset_app() -> Iterator[object]:
    """A Superset app (its metadata DB not migrated: enough for schemas and engine specs)."""
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        yield app
