"""Layering: dnnlib and torch_utils sit below stylegan_rlo and import nothing from it, except the one documented hook
(torch_utils.persistence rebuilds official pickles as our classes through stylegan_rlo.checkpoints.pickles, lazily)."""

from __future__ import annotations

import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = {("torch_utils/persistence.py", "stylegan_rlo.checkpoints.pickles")}


def upward_imports(path: str) -> set[str]:
    """Modules of stylegan_rlo that the file imports (anywhere in it, also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found.update(n for n in names if n == "stylegan_rlo" or n.startswith("stylegan_rlo."))
    return found


def test_low_layers_do_not_import_stylegan_rlo():
    files = glob.glob(os.path.join(REPO, "dnnlib", "**", "*.py"), recursive=True) + \
        glob.glob(os.path.join(REPO, "torch_utils", "**", "*.py"), recursive=True)
    assert len(files) > 5
    found = {(os.path.relpath(f, REPO), m) for f in files for m in upward_imports(f)}
    assert found == ALLOWED
