"""``amplitude-dashboard``: the console script installed with the package writes the importable ZIP, from the
sources shipped inside the package, bound to an existing connection with ``--database-uuid``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from shillelagh_amplitude.dashboards import build

from .scripts import REPO

SCRIPT = Path(sys.executable).parent / "amplitude-dashboard"
EXISTING = "2f1c0d4e-9b7a-4c55-8a0e-3d6f1b2c4a59"


def _members(path: Path) -> dict[str, dict]:
    with zipfile.ZipFile(path) as archive:
        return {name.split("/", 1)[1]: yaml.safe_load(archive.read(name)) for name in archive.namelist()}


def test_the_script_binds_the_bundle_to_an_existing_connection(tmp_path: Path) -> None:
    result = subprocess.run([str(SCRIPT), "--output", "out/bundle.zip", "--database-uuid", EXISTING.upper()],
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    written = tmp_path / "out" / "bundle.zip"
    assert result.stdout.strip() == "out/bundle.zip"
    files = _members(written)
    (database,) = [config for name, config in files.items() if name.startswith("databases/")]
    assert database["uuid"] == EXISTING  # the importer finds the operator's connection and keeps it as it is
    datasets = [config for name, config in files.items() if name.startswith("datasets/")]
    sources = list((REPO / "dashboards/session_length/datasets").glob("*.yaml"))
    assert len(datasets) == len(sources) and {d["database_uuid"] for d in datasets} == {EXISTING}
    assert written.read_bytes() == build.build(tmp_path / "same.zip", database_uuid=EXISTING).read_bytes()


def test_without_a_uuid_the_bundle_brings_its_own_connection(tmp_path: Path) -> None:
    subprocess.run([str(SCRIPT)], cwd=tmp_path, capture_output=True, check=True)
    files = _members(tmp_path / "session_length_dashboard.zip")
    own = build.uuid_for("database", "Amplitude")
    assert files["databases/Amplitude.yaml"]["uuid"] == own
    assert files["databases/Amplitude.yaml"]["sqlalchemy_uri"] == "amplitude://"  # no keys in the bundle
    assert {c["database_uuid"] for n, c in files.items() if n.startswith("datasets/")} == {own}


def test_a_malformed_uuid_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = subprocess.run([str(SCRIPT), "--database-uuid", "Amplitude"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "argument --database-uuid: not a UUID: 'Amplitude'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_repository_script_is_the_installed_module() -> None:
    """One copy of the bundle logic: dashboards/build.py is what the package imports."""
    assert Path(build.__file__).resolve() == REPO / "dashboards" / "build.py"


def test_a_wheel_ships_the_sources_and_the_script(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("shillelagh_amplitude-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    sources = {f"shillelagh_amplitude/dashboards/{p.relative_to(REPO / 'dashboards')}"
               for p in (REPO / "dashboards").rglob("*") if p.suffix in (".py", ".yaml")}
    assert {"shillelagh_amplitude/dashboards/session_length/dashboard.yaml",
            "shillelagh_amplitude/dashboards/engines/spark.yaml"} <= sources <= names
    assert "amplitude-dashboard = shillelagh_amplitude.dashboards.build:main" in entry_points
