"""Name resolution for the handler check (handlers.py), on top of pymodules: the locals of each
function on the handler's path (assignments, imports inside it, nested definitions, parameters with
their defaults or what the call passes them), lookups made at run time (getattr, importlib.import_module,
__import__, globals()[...], functools.partial) resolved where their names are literal and marked
unseen where not, and the words of a command (a model server started through a shell)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from buildtool.policy.pymodules import (
    Class,
    DictValue,
    External,
    Function,
    ImageModules,
    Instance,
    Module,
    ModuleRef,
    Target,
)

UNSEEN = "?"  # an External named so was looked up at run time: its name is the lookup's source
DYNAMIC_IMPORTS = ("importlib.import_module", "__import__", "importlib.__import__")
NAMESPACES = ("globals()", "locals()", "vars()")


def named(target: Target, names: Iterable[str]) -> str | None:
    """The target's dotted name when it is one of `names` (or ends with `.name`); not what calling
    one returns (`model = SentenceTransformer(...)`: model(...) encodes, it does not load)."""
    if isinstance(target, External):
        name = target.name
        if any(name == wanted or name.endswith("." + wanted) for wanted in names):
            return name
    return None


def unseen(target: Target) -> str | None:
    """The source of the run-time lookup the target went through, if it did."""
    if isinstance(target, External) and target.name.startswith(UNSEEN):
        return target.name[len(UNSEEN) :]
    return None


def short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Passed:
    """A local already resolved: a parameter's argument, or its default."""

    target: Target


# A local binding: an expression, an import's qualified name, a definition, a resolved value, or
# None (unknown: a loop variable, a parameter nobody passes).
Binding = ast.expr | str | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | Passed | None


@dataclass(eq=False)
class Scope(Module):
    """The locals of one function: looked up before those of the enclosing scope (`parent`)."""

    parent: Module | None = None
    cls: ast.ClassDef | None = None
    local: dict[str, list[Binding]] = field(default_factory=dict)
    body: list[ast.stmt] = field(default_factory=list)


def base_module(module: Module) -> Module:
    while isinstance(module, Scope) and module.parent is not None:
        module = module.parent
    return module


def own_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Nodes under `nodes` in source order; nested function, lambda and class nodes are yielded but
    not entered (their bodies run only when called)."""
    stack = list(nodes)[::-1]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(list(ast.iter_child_nodes(node))[::-1])


class Resolver(ImageModules):
    """ImageModules that also sees the locals of functions and lookups made at run time."""

    def __init__(self, directory: Path, loaders: tuple[str, ...]) -> None:
        super().__init__(directory)
        self.loaders = loaders
        self._active: set[tuple[int, str]] = set()

    def scope(self, function: Function, passed: dict[str, Target] | None = None) -> Scope:
        """The locals of `function` run with `passed` as arguments."""
        parent, node = function.module, function.node
        base = base_module(parent)
        parts = tuple(base.name.split(".")) if base.name else ()
        package = parts if base.path.name == "__init__.py" else parts[:-1]
        scope = Scope(base.name, base.path, base.tree, parent=parent, cls=function.cls)
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        params = [*positional, *args.kwonlyargs, *(a for a in (args.vararg, args.kwarg) if a)]
        defaults = [*[None] * (len(positional) - len(args.defaults)), *args.defaults, *args.kw_defaults]
        for param, default in zip_longest(params, defaults):
            given = (passed or {}).get(param.arg)
            if given is None and default is not None:
                given = self.resolve(parent, default, function.cls)
            scope.local[param.arg] = [Passed(given) if given is not None else None]
        if not isinstance(node, ast.Lambda):
            scope.body = node.body
        shared: set[str] = set()
        for child in own_nodes([node.body] if isinstance(node, ast.Lambda) else node.body):
            if isinstance(child, ast.Global | ast.Nonlocal):
                shared.update(child.names)
            elif isinstance(child, ast.Assign):
                for target in child.targets:
                    self._assign(scope, target, child.value)
            elif isinstance(child, ast.AnnAssign | ast.NamedExpr) and child.value is not None:
                self._assign(scope, child.target, child.value)
            elif isinstance(child, ast.Import | ast.ImportFrom):
                bound = Module(base.name, base.path, base.tree)
                self._bind(bound, child, package)  # as an import at module level would bind
                for name, qualified in bound.imports.items():
                    scope.local.setdefault(name, []).append(qualified)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                scope.local.setdefault(child.name, []).append(child)
            elif isinstance(child, ast.withitem) and child.optional_vars is not None:
                self._assign(scope, child.optional_vars, child.context_expr)  # most return self
            elif isinstance(child, ast.For | ast.AsyncFor):
                self._assign(scope, child.target, None)
            elif isinstance(child, ast.ExceptHandler) and child.name:
                scope.local.setdefault(child.name, []).append(None)
        for name in shared:
            scope.local.pop(name, None)
        return scope

    def _assign(self, scope: Scope, target: ast.expr, value: ast.expr | None) -> None:
        if isinstance(target, ast.Name):
            scope.local.setdefault(target.id, []).append(value)
        elif isinstance(target, ast.Tuple | ast.List):
            values: list[ast.expr | None] = [None] * len(target.elts)
            if isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(target.elts):
                values = [None if isinstance(v, ast.Starred) else v for v in value.elts]
            for element, element_value in zip(target.elts, values, strict=True):
                self._assign(scope, element, element_value)
        elif isinstance(target, ast.Starred):
            self._assign(scope, target.value, None)

    def expression(self, module: Module, name: str) -> tuple[Module, ast.expr] | None:
        """The last expression `name` is assigned in the scope that binds it."""
        while isinstance(module, Scope) and module.parent is not None:
            if name in module.local:
                exprs = [b for b in module.local[name] if isinstance(b, ast.expr)]
                return (module, exprs[-1]) if exprs else None
            module = module.parent
        return (module, module.bindings[name]) if name in module.bindings else None

    def literal(self, module: Module, expr: ast.expr, depth: int = 0) -> str | None:
        """The string `expr` stands for, when it is a constant or a name bound to one."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.Name) and depth < 10:
            found = self.expression(module, expr.id)
            return self.literal(found[0], found[1], depth + 1) if found else None
        return None

    # --- resolution -----------------------------------------------------------------------------

    def resolve_name(self, module: Module, name: str, depth: int = 0) -> Target:
        if not isinstance(module, Scope) or module.parent is None:
            return super().resolve_name(module, name, depth)
        if name not in module.local:
            return self.resolve_name(module.parent, name, depth + 1)
        key = (id(module), name)
        if key in self._active or depth > 20:
            return None
        self._active.add(key)
        try:
            found = [self._bound(module, b, depth) for b in module.local[name]]
        finally:
            self._active.discard(key)
        return max(reversed(found), key=self._rank)  # the most telling; the last of equals

    def _bound(self, scope: Scope, binding: Binding, depth: int) -> Target:
        if isinstance(binding, Passed):
            return binding.target
        if isinstance(binding, str):
            return self._qualified(binding, depth + 1)
        if isinstance(binding, ast.ClassDef):
            return Class(scope, binding)
        if isinstance(binding, ast.FunctionDef | ast.AsyncFunctionDef):
            return Function(scope, binding, scope.cls)
        return None if binding is None else self.resolve(scope, binding, scope.cls, depth + 1)

    def _rank(self, target: Target) -> int:
        if named(target, self.loaders):
            return 4
        if unseen(target) is not None:
            return 3
        if isinstance(target, Function | Class | Instance | ModuleRef | DictValue):
            return 2
        return 1 if isinstance(target, External) else 0

    def resolve(self, module: Module, expr: ast.expr, cls: ast.ClassDef | None, depth: int = 0) -> Target:
        if depth > 20:
            return None
        if isinstance(expr, ast.Call):
            return self._result(module, expr, cls, depth)
        if isinstance(expr, ast.Subscript):
            return self._item(module, expr, cls, depth)
        if isinstance(expr, ast.IfExp | ast.BoolOp | ast.NamedExpr):  # the most telling branch
            branches = [expr.value] if isinstance(expr, ast.NamedExpr) else self._branches(expr)
            return max((self.resolve(module, b, cls, depth + 1) for b in branches), key=self._rank)
        return super().resolve(module, expr, cls, depth)

    def _branches(self, expr: ast.IfExp | ast.BoolOp) -> list[ast.expr]:
        return [expr.body, expr.orelse] if isinstance(expr, ast.IfExp) else expr.values

    def _result(self, module: Module, call: ast.Call, cls: ast.ClassDef | None, depth: int) -> Target:
        """What a call returns, where it is a callable: a constructor's instance, a module imported
        by name, getattr's attribute, a partial's function."""
        callee = self.resolve(module, call.func, cls, depth + 1)
        if isinstance(callee, Class):
            return Instance(callee.module, callee.node)
        if not isinstance(callee, External):
            return None
        name, first = callee.name.removeprefix("builtins."), call.args[0] if call.args else None
        if name in DYNAMIC_IMPORTS and first is not None:
            text = self.literal(module, first)
            if text is None or text.startswith("."):
                return External(UNSEEN + short(call))
            whole = name == "importlib.import_module" or len(call.args) > 3 or call.keywords
            return self._qualified(text if whole else text.split(".")[0], depth + 1)
        if name == "getattr" and len(call.args) >= 2:
            attr = self.literal(module, call.args[1])
            if attr is None:
                return External(UNSEEN + short(call))
            return self._attribute(self.resolve(module, call.args[0], cls, depth + 1), attr, depth + 1)
        if name in ("functools.partial", "functools.partialmethod"):
            return self.resolve(module, first, cls, depth + 1) if first is not None else None
        return DictValue(module, call) if name == "dict" else External(callee.name + "()")

    def _item(self, module: Module, expr: ast.Subscript, cls: ast.ClassDef | None, depth: int) -> Target:
        container = self.resolve(module, expr.value, cls, depth + 1)
        key = self.literal(module, expr.slice)
        space = container.name.removeprefix("builtins.") if isinstance(container, External) else ""
        if space in (*NAMESPACES, "sys.modules"):
            if key is None:
                return External(UNSEEN + short(expr))
            if space == "sys.modules":
                return self._qualified(key, depth + 1)
            return self.resolve_name(module if space == "locals()" else base_module(module), key)
        if isinstance(container, DictValue) and isinstance(container.node, ast.Dict) and key is not None:
            for k, v in reversed(list(zip(container.node.keys, container.node.values, strict=True))):
                if k is not None and self.literal(container.module, k) == key:
                    return self.resolve(container.module, v, None, depth + 1)
        return None

    def alternatives(self, module: Module, expr: ast.expr, cls: ast.ClassDef | None) -> list[Target]:
        """What `expr` may stand for: each branch of `a if c else b` and `a or b`, each value of a
        dict or list display indexed by a key known only at run time."""
        if isinstance(expr, ast.IfExp | ast.BoolOp):
            return [t for branch in self._branches(expr) for t in self.alternatives(module, branch, cls)]
        if isinstance(expr, ast.Subscript) and self.literal(module, expr.slice) is None:
            where, display = module, expr.value
            if isinstance(display, ast.Name):
                where, display = self.expression(module, display.id) or (module, display)
            if isinstance(display, ast.Dict | ast.List | ast.Tuple):
                values = display.values if isinstance(display, ast.Dict) else display.elts
                return [self.resolve(where, v, None) for v in values]
        return [self.resolve(module, expr, cls)]

    def entry(self, scope: Module, expr: ast.expr, depth: int = 0) -> tuple[Module, ast.expr] | None:
        """Where config["handler"] is given, as runpod.serverless.start reads it: a dict display (with
        `**other`), dict(handler=...), or a name bound to one (then `cfg["handler"] = fn` and
        `cfg.update(handler=fn)` after it)."""
        if depth > 10:
            return None
        if isinstance(expr, ast.Dict):
            for key, value in reversed(list(zip(expr.keys, expr.values, strict=True))):
                found = self.entry(scope, value, depth + 1) if key is None else None
                if found or (key is not None and self.literal(scope, key) == "handler"):
                    return found or (scope, value)
        elif isinstance(expr, ast.Call) and named(self.resolve(scope, expr.func, None), ("dict",)):
            for keyword in reversed(expr.keywords):
                found = self.entry(scope, keyword.value, depth + 1) if keyword.arg is None else None
                if found or keyword.arg == "handler":
                    return found or (scope, keyword.value)
            return next((f for a in expr.args if (f := self.entry(scope, a, depth + 1))), None)
        elif isinstance(expr, ast.Name):
            bound = self.expression(scope, expr.id)
            where = bound[0] if bound else scope
            late = None
            for node in own_nodes(where.body if isinstance(where, Scope) else where.tree.body):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Subscript) and ast.unparse(t.value) == expr.id:
                            late = node.value if self.literal(where, t.slice) == "handler" else late
                elif isinstance(node, ast.Call) and ast.unparse(node.func) == f"{expr.id}.update":
                    late = next((k.value for k in node.keywords if k.arg == "handler"), late)
            if late is not None:
                return where, late
            return self.entry(bound[0], bound[1], depth + 1) if bound else None
        return None

    def words(self, module: Module, expr: ast.expr, depth: int = 0) -> list[str | None]:
        """The words of a command, as far as they are known; None for each part that is not."""
        if depth > 10:
            return [None]
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str | int | float):
            return [str(expr.value)]
        if isinstance(expr, ast.List | ast.Tuple | ast.Set):
            return [w for e in expr.elts for w in self.words(module, e, depth + 1)]
        if isinstance(expr, ast.Starred | ast.FormattedValue):
            return self.words(module, expr.value, depth + 1)
        if isinstance(expr, ast.Name):
            found = self.expression(module, expr.id)
            return self.words(found[0], found[1], depth + 1) if found else [None]
        if isinstance(expr, ast.JoinedStr):
            parts = [w for v in expr.values for w in self.words(module, v, depth + 1)]
            return ["".join(p for p in parts if p is not None)] if None not in parts else parts
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            left, right = self.words(module, expr.left, depth + 1), self.words(module, expr.right, depth + 1)
            if len(left) == len(right) == 1 and left[0] is not None and right[0] is not None:
                return [left[0] + right[0]]
            return left + right
        if isinstance(expr, ast.Call) and expr.args:  # " ".join(words), str(word), shlex.split(line)
            func = ast.unparse(expr.func)
            if func.endswith(".join") or func in ("str", "shlex.split", "shlex.join", "shlex.quote"):
                return self.words(module, expr.args[0], depth + 1)
        return [None]
