"""Code outside odinlab/store/ uses only the store's public surface.

The store's internals (private members of its classes, the hidden ``_row`` column of the
images table, the on-disk layout) may change; the debugging, sampling and drawing layers,
and everything built on them, must not notice.
"""

import ast
from pathlib import Path

import odinlab

PACKAGE = Path(odinlab.__file__).parent
STORE = PACKAGE / "store"


def _private_members_of_the_store() -> set[str]:
    """Every ``_name`` that a class in odinlab/store/ defines or assigns on ``self``."""
    names = set()
    for path in STORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("_"):
                names.add(node.name)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _violations(path: Path, private: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        # `store._x`, `self.store._x`, `attr.store._x`...: a private member reached through a store
        # (a consumer's own private helpers, `self._cache`, are its own business).
        if (isinstance(node, ast.Attribute) and node.attr in private
                and "store" in ast.unparse(node.value).lower()):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.Constant) and node.value == "_row":
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} '_row'")
    return found


def test_no_code_outside_the_store_touches_its_private_members():
    private = _private_members_of_the_store()
    assert {"_backend", "_select_rows", "_present"} <= private  # the scan sees the store's internals
    outside = [p for p in PACKAGE.rglob("*.py") if STORE not in p.parents]
    violations = [v for path in outside for v in _violations(path, private)]
    assert violations == [], "private store members used outside odinlab/store/:\n" + "\n".join(violations)


def test_the_guard_catches_a_private_access(tmp_path):
    sample = tmp_path / "odinlab" / "bad.py"
    sample.parent.mkdir()
    sample.write_text("def f(store):\n    return store._backend.tables, store.select('x')['_row']\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "odinlab"
    try:
        found = _violations(sample, _private_members_of_the_store())
    finally:
        PACKAGE = saved
    assert [v.split(" ", 1)[1] for v in found] == [".\u005fbackend", "'_row'"]
