"""A notebook cell as a remote call: what it needs from the namespace, what it gives back.

``analyse`` reads the cell's AST: the *free* names (read somewhere in the cell, nested
functions and comprehensions included, and not bound by the cell before) are what to push
from the notebook namespace; the names the cell binds at top level are what to pull back.
The client asks it before sending; the worker's ``executor.cells.run_cell`` asks it for the
names to return when the client wants them all. No IPython here, and nothing of the worker.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from typing import Any


@dataclass
class CellNames:
    free: list[str]  # read before (or without) being bound in the cell: push candidates
    bound: list[str]  # bound at top level (assignments, imports, defs, for targets, ...)


def analyse(source: str) -> CellNames:
    """Free and top-level bound names of a cell (SyntaxError for a cell that does not parse)."""
    tree = ast.parse(source)
    bound_so_far: set[str] = set()
    free: dict[str, None] = {}
    bound: dict[str, None] = {}

    def read(node: ast.AST) -> None:
        for name in _reads(node):
            if name not in bound_so_far:
                free.setdefault(name)

    def bind(names: list[str]) -> None:
        bound_so_far.update(names)
        bound.update(dict.fromkeys(names))

    def block(stmts: list[ast.stmt]) -> None:
        """In execution order: a loop's target is bound before its body reads it."""
        for stmt in stmts:
            if isinstance(stmt, (ast.For, ast.AsyncFor)):
                read(stmt.iter)
                bind(_store_names(stmt.target))
                block(stmt.body)
                block(stmt.orelse)
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):
                for item in stmt.items:
                    read(item.context_expr)
                    if item.optional_vars is not None:
                        bind(_store_names(item.optional_vars))
                block(stmt.body)
            elif isinstance(stmt, (ast.If, ast.While)):
                read(stmt.test)
                block(stmt.body)
                block(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                block(stmt.body)
                for handler in stmt.handlers:
                    if handler.type is not None:
                        read(handler.type)
                    if handler.name:
                        bind([handler.name])
                    block(handler.body)
                block(stmt.orelse)
                block(stmt.finalbody)
            else:
                read(stmt)
                bind(_top_level_bindings(stmt))

    block(tree.body)
    return CellNames([n for n in free if not hasattr(builtins, n)], list(bound))


def _store_names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _reads(stmt: ast.stmt) -> list[str]:
    """Names a statement reads, including inside functions and classes it defines (their
    globals), minus what those inner scopes bind themselves (parameters, locals)."""
    names: list[str] = []

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.local_scopes: list[set[str]] = []

        def visit_Name(self, node: ast.Name) -> None:
            if isinstance(node.ctx, ast.Load) and not any(node.id in s for s in self.local_scopes):
                names.append(node.id)

        def _scope(self, node: ast.AST, params: set[str]) -> None:
            local = set(params)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                    local.add(sub.id)
                elif isinstance(sub, (ast.Global, ast.Nonlocal)):
                    local.difference_update(sub.names)
            self.local_scopes.append(local)
            self.generic_visit(node)
            self.local_scopes.pop()

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            for deco in node.decorator_list:
                self.visit(deco)
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    self.visit(default)
            params = {a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]}
            params.update(a.arg for a in (node.args.vararg, node.args.kwarg) if a)
            self.local_scopes.append(params)
            for sub in node.body:
                self._scope(sub, set())
            self.local_scopes.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Lambda(self, node: ast.Lambda) -> None:
            params = {a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]}
            self._scope(node.body, params)

        def _comprehension(self, node: Any) -> None:
            targets = {n.id for gen in node.generators for n in ast.walk(gen.target)
                       if isinstance(n, ast.Name)}
            self.local_scopes.append(targets)
            self.generic_visit(node)
            self.local_scopes.pop()

        visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    Visitor().visit(stmt)
    return names


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _top_level_bindings(stmt: ast.stmt) -> list[str]:
    """Names bound in the cell's (module) scope by one top-level statement."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"]
    names: list[str] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(child.name)  # defined inside an if/for/with at top level
            elif isinstance(child, _SCOPES):
                continue  # what it binds is its own
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                names.append(child.id)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                names.extend(_top_level_bindings(child))
            else:
                walk(child)

    walk(stmt)
    return names
