"""The environment variables cytoray sets live in one table (cytoray/process_env.py)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from cytoray import process_env

PACKAGE = Path(__file__).resolve().parents[1] / "cytoray"
WRITES = {"setdefault", "update", "pop", "popitem", "clear", "putenv", "unsetenv"}


def _environ_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, enclosing function) of every write to os.environ in a module."""
    found, stack = [], []

    class V(ast.NodeVisitor):
        def visit_FunctionDef(self, node):
            stack.append(node.name)
            self.generic_visit(node)
            stack.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Subscript(self, node):
            if (
                isinstance(node.ctx, (ast.Store, ast.Del))
                and ast.unparse(node.value) == "os.environ"
            ):
                found.append((node.lineno, stack[-1] if stack else "<module>"))
            self.generic_visit(node)

        def visit_Call(self, node):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in WRITES:
                owner = ast.unparse(f.value)
                if owner == "os.environ" or (owner == "os" and f.attr in {"putenv", "unsetenv"}):
                    found.append((node.lineno, stack[-1] if stack else "<module>"))
            self.generic_visit(node)

    V().visit(tree)
    return found


def test_only_the_table_sets_environment_variables():
    allowed = {("process_env.py", "ensure"), ("process_env.py", "set_dashboard")}
    allowed.add(("training/runner.py", "_loopback_only"))  # set for one ray.init, then restored
    writes = {
        (str(p.relative_to(PACKAGE)), fn)
        for p in PACKAGE.rglob("*.py")
        for _, fn in _environ_writes(ast.parse(p.read_text()))
    }
    assert writes <= allowed, sorted(writes - allowed)
    assert ("process_env.py", "ensure") in writes  # the scan sees a write when there is one


def test_ensure_sets_defaults_keeps_the_users_value_and_forces_only_what_must_be(monkeypatch):
    for name in process_env.GROUPS["tune"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")  # the user's own
    monkeypatch.setenv(
        "TUNE_DISABLE_SIGINT_HANDLER", "0"
    )  # would turn Ctrl-C into a cut-short search
    process_env.ensure("tune")
    process_env.ensure("tune")  # idempotent
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
    assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S")
    process_env.ensure("tune")
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == process_env.value("TUNE_GLOBAL_CHECKPOINT_S")
    with pytest.raises(KeyError):
        process_env.ensure("no-such-group")


def test_every_setting_says_why_and_each_name_is_in_one_group():
    names = [n for g in process_env.GROUPS.values() for n in g]
    assert len(names) == len(set(names))
    for g in process_env.GROUPS.values():
        for name, s in g.items():
            assert name.isupper() and s.value != "" and len(s.why) > 20, name
    assert process_env.value(process_env.POLL_ENV) == process_env.POLL_INTERVAL_S == "0.1"
