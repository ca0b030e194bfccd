"""The data path's layers (export -> store -> sql -> superset) import only downward: a layer never imports a
layer after it, and the store never imports the export client (shared types live in modules both import)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "connector" / "shillelagh_amplitude"
#: What each layer may not import (the layers that come before it in the data path, or after).
FORBIDDEN = {"store": {"export", "sql", "superset"}, "export": {"sql", "superset"}, "sql": {"superset"}}


def _imported_layers(path: Path) -> set[str]:
    """The sub-packages of shillelagh_amplitude a module imports (relative or absolute imports)."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 2 or (node.level == 0 and module.startswith("shillelagh_amplitude.")):
                layers.add(module.removeprefix("shillelagh_amplitude.").split(".")[0])
    return layers


def test_no_layer_imports_upward():
    offending = {
        f"{path.relative_to(PACKAGE)} imports {layer}"
        for layer_name, forbidden in FORBIDDEN.items()
        for path in (PACKAGE / layer_name).glob("*.py")
        for layer in _imported_layers(path) & forbidden
    }
    assert offending == set()


def test_the_check_sees_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from ..export.client import AmplitudeFault\nfrom .hot_cache import HotCache\n")
    assert _imported_layers(module) == {"export"}
