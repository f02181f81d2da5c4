"""`deepaq/` (the library users install to score) must not depend on `data_prep/` (corpus tools)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_deepaq_never_imports_data_prep():
    offenders = sorted(
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / "deepaq").rglob("*.py")
        for m in _imported_modules(p)
        if m == "data_prep" or m.startswith("data_prep."))
    assert not offenders, offenders


def test_one_home_for_the_manifest_schema():
    """The schema is defined once, in deepaq/manifest.py; nothing else declares column lists."""
    homes = sorted(str(p.relative_to(ROOT)) for d in ("deepaq", "data_prep")
                   for p in (ROOT / d).rglob("*.py")
                   if "REQUIRED_COLUMNS" in p.read_text() or "TRAINING_COLUMNS =" in p.read_text())
    assert homes == ["deepaq/manifest.py"], homes
