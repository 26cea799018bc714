"""The dependency slice of a notebook: the earlier cells that a set of target cells needs.

``cell_names(source)`` tells which names a code cell needs from earlier cells
(*free* names) and which it defines or changes (*bound* names: assignments,
definitions, imports, and in-place changes such as ``results.append(x)`` or
``d[k] = v`` at the cell's top level). ``dependency_slice`` then finds every
earlier cell that a set of target cells needs, transitively, so that the target
cells can run alone (in order, in one kernel) instead of the whole notebook: the
tests execute such slices, and :mod:`gramlib.views.assignments` builds each
assignment from the setup cells its exercises need. The analysis
over-approximates where it cannot be sure (a name used inside a function counts
as needed), so a slice may hold more cells than necessary but never fewer, except
for names created dynamically (``exec``, ``globals()``), which the book does not use.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field

from IPython.core.inputtransformer2 import TransformerManager

_TRANSFORMER = TransformerManager()
# Calls that change global state without binding a name (x64 mode, plot style,
# print options, seeds): cells made only of imports and such calls always run.
_SETUP_CALL = re.compile(r"(config|rcParams|set_|use_|filterwarnings|seed|get_ipython)")
_MUTATING_METHODS = {"append", "extend", "update", "add", "insert", "pop", "remove", "clear",
                     "setdefault", "sort", "reverse", "discard", "popitem"}
_IPYTHON_NAMES = {"get_ipython", "display", "In", "Out", "_", "__", "___"}


def python_source(cell_source: str) -> str:
    """The cell as plain Python (IPython magics turned into calls)."""
    return _TRANSFORMER.transform_cell(cell_source)


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _root(node):
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


@dataclass
class CellNames:
    free: set = field(default_factory=set)  # needed from earlier cells
    bound: set = field(default_factory=set)  # assigned, defined or imported here
    changed: set = field(default_factory=set)  # changed in place: d[k] = v, results.append(x)
    imported: set = field(default_factory=set)
    setup: bool = False  # only imports and global-state calls


class _Scan(ast.NodeVisitor):
    """Walk module-level code in evaluation order; nested scopes are read late."""

    def __init__(self):
        self.names = CellNames()
        self.late = set()  # loads inside functions, lambdas, classes, comprehensions

    # -- module-level names, in evaluation order
    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            if node.id not in self.names.bound:
                self.names.free.add(node.id)
        else:
            self.names.bound.add(node.id)

    def _mutate(self, target):
        root = _root(target)
        if root is not None:
            if root not in self.names.bound:
                self.names.free.add(root)
            self.names.changed.add(root)

    def visit_Assign(self, node):
        self.visit(node.value)
        for t in node.targets:
            self._target(t)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
        self._target(node.target)

    def visit_AugAssign(self, node):
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            if node.target.id not in self.names.bound:
                self.names.free.add(node.target.id)
            self.names.bound.add(node.target.id)
        else:
            self._target(node.target)

    def _target(self, t):
        if isinstance(t, (ast.Attribute, ast.Subscript)):
            self.visit(t)  # loads inside the target (index expressions)
            self._mutate(t)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for elt in t.elts:
                self._target(elt)
        elif isinstance(t, ast.Starred):
            self._target(t.value)
        else:
            self.visit(t)

    def visit_For(self, node):
        self.visit(node.iter)
        self._target(node.target)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    def visit_Delete(self, node):
        for t in node.targets:
            self._target(t)

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATING_METHODS:
            self._mutate(node.func.value)  # e.g. results.append(x)

    def visit_Import(self, node):
        for alias in node.names:
            name = alias.asname or alias.name.split(".")[0]
            self.names.bound.add(name)
            self.names.imported.add(name)

    visit_ImportFrom = visit_Import

    # -- nested scopes: names they load are needed unless this cell binds them anywhere
    def _nested(self, node, params=()):
        inner = set(params)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
                inner.add(sub.id)
            elif isinstance(sub, ast.arg):
                inner.add(sub.arg)
            elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
                inner.add(sub.name)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                inner.update(a.asname or a.name.split(".")[0] for a in sub.names)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in inner:
                self.late.add(sub.id)

    def visit_FunctionDef(self, node):
        for d in node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(d)
        self._nested(ast.Module(body=node.body, type_ignores=[]),
                     [a.arg for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs]
                     + [a.arg for a in (node.args.vararg, node.args.kwarg) if a])
        self.names.bound.add(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        for d in node.decorator_list + node.bases:
            self.visit(d)
        self._nested(ast.Module(body=node.body, type_ignores=[]))
        self.names.bound.add(node.name)

    def visit_Lambda(self, node):
        self._nested(node.body, [a.arg for a in node.args.args + node.args.kwonlyargs])

    def _comprehension(self, node):
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        self._nested(node)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


def cell_names(cell_source: str) -> CellNames:
    """Names a code cell needs from earlier cells and names it defines or changes."""
    tree = ast.parse(python_source(cell_source))
    scan = _Scan()
    scan.visit(tree)
    names = scan.names
    names.free |= scan.late - names.bound
    names.setup = bool(tree.body) and all(
        isinstance(s, (ast.Import, ast.ImportFrom))
        or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and _SETUP_CALL.search(_dotted(s.value.func)))
        for s in tree.body
    )
    names.free -= set(dir(builtins)) | _IPYTHON_NAMES
    return names


def dependency_slice(codes: list[str], targets) -> list[int]:
    """Indices of the cells needed to run ``targets`` (indices into ``codes``), in order.

    Always includes the first cell (the install cell) and setup cells (imports,
    x64 mode, plot style) that come before the last target.
    """
    info = [cell_names(c) for c in codes]
    modules = set().union(*(i.imported for i in info))
    for i in info:  # an in-place change to a module (plt.rcParams[...] = ...) is not a binding
        i.bound |= i.changed - modules
    last = max(targets)
    needed = set(targets) | {0} | {i for i in range(last) if info[i].setup}
    stack = list(needed)
    while stack:
        j = stack.pop()
        for name in info[j].free:
            for k in range(j - 1, -1, -1):
                if name in info[k].bound:
                    if k not in needed:
                        needed.add(k)
                        stack.append(k)
                    break
    return sorted(needed)
