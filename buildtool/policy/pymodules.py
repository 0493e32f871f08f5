"""The Python files of an image's template directory, parsed, with what each module binds at module
level, and names resolved the way Python would run them (imports with `as`, relative imports,
aliases, classes, methods). The handler check (handlers.py) asks this where a call goes."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from buildtool.errors import Location

Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


@dataclass(frozen=True)
class HandlerProblem:
    message: str
    where: Location
    hint: str | None = None


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    bindings: dict[str, ast.expr] = field(default_factory=dict)  # module-level name = expr
    imports: dict[str, str] = field(default_factory=dict)  # local name -> qualified name


# What a name or expression stands for.
@dataclass(frozen=True)
class Function:
    module: Module
    node: Def
    cls: ast.ClassDef | None = None  # a method's class (for self)


@dataclass(frozen=True)
class Class:
    module: Module
    node: ast.ClassDef


@dataclass(frozen=True)
class Instance:
    module: Module
    node: ast.ClassDef


@dataclass(frozen=True)
class ModuleRef:
    module: Module


@dataclass(frozen=True)
class External:
    name: str  # dotted, as far as it is known: "torch.load", "sentence_transformers.SentenceTransformer"


@dataclass(frozen=True)
class DictValue:
    module: Module
    node: ast.expr  # a dict display or a dict(...) call


Target = Function | Class | Instance | ModuleRef | External | DictValue | None


class ImageModules:
    """The image's Python files, parsed, with what each module binds at module level."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.modules: dict[str, Module] = {}
        self.problems: list[HandlerProblem] = []

    def load(self, path: Path) -> Module | None:
        relative = path.relative_to(self.directory).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        name = ".".join(parts)
        if name in self.modules:
            return self.modules[name]
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problems.append(
                HandlerProblem(
                    f"{path.name} is not UTF-8 text (byte {exc.start})",
                    Location(path),
                    "save it as UTF-8, as Python source is",
                )
            )
            return None
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            self.problems.append(
                HandlerProblem(f"{path.name} does not parse: {exc.msg}", Location(path, exc.lineno))
            )
            return None
        module = Module(name, path, tree)
        package = parts[:-1] if relative.name != "__init__" else parts
        for node in tree.body:
            self._bind(module, node, package)
        self.modules[name] = module
        return module

    def _bind(self, module: Module, node: ast.stmt, package: tuple[str, ...]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            module.functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            module.classes[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    module.bindings[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            module.bindings[node.target.id] = node.value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                # `import a.b` binds a; `import a.b as c` binds c to a.b
                module.imports[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                module.imports[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self._bind(module, child, package)

    def module(self, name: str) -> Module | None:
        if name in self.modules:
            return self.modules[name]
        for candidate in (
            self.directory / Path(*name.split(".")).with_suffix(".py"),
            self.directory / Path(*name.split(".")) / "__init__.py",
        ):
            if name and candidate.is_file():
                return self.load(candidate)
        return None

    # --- resolution -----------------------------------------------------------------------------

    def resolve(self, module: Module, expr: ast.expr, cls: ast.ClassDef | None, depth: int = 0) -> Target:
        if depth > 20:
            return None
        if isinstance(expr, ast.Lambda):
            return Function(module, expr)
        if isinstance(expr, ast.Dict):
            return DictValue(module, expr)
        if isinstance(expr, ast.Name):
            if expr.id == "self" and cls is not None:
                return Instance(module, cls)
            return self.resolve_name(module, expr.id, depth + 1)
        if isinstance(expr, ast.Attribute):
            base = self.resolve(module, expr.value, cls, depth + 1)
            return self._attribute(base, expr.attr, depth + 1)
        if isinstance(expr, ast.Call):
            callee = self.resolve(module, expr.func, cls, depth + 1)
            if isinstance(callee, Class):
                return Instance(callee.module, callee.node)
            if isinstance(callee, External):
                return DictValue(module, expr) if callee.name == "dict" else External(callee.name + "()")
        return None

    def resolve_name(self, module: Module, name: str, depth: int = 0) -> Target:
        if name in module.functions:
            return Function(module, module.functions[name])
        if name in module.classes:
            return Class(module, module.classes[name])
        if name in module.bindings:
            return self.resolve(module, module.bindings[name], None, depth + 1)
        if name in module.imports:
            return self._qualified(module.imports[name], depth + 1)
        return External(name)

    def _qualified(self, qualified: str, depth: int) -> Target:
        local = self.module(qualified)
        if local is not None:
            return ModuleRef(local)
        owner, _, attr = qualified.rpartition(".")
        parent = self.module(owner) if owner else None
        if parent is not None:
            return self.resolve_name(parent, attr, depth + 1)
        return External(qualified)

    def _attribute(self, base: Target, attr: str, depth: int) -> Target:
        if isinstance(base, ModuleRef):
            return self.resolve_name(base.module, attr, depth)
        if isinstance(base, Class | Instance):
            found = class_method(base.node, attr)
            return Function(base.module, found, base.node) if found else External(f"{base.node.name}.{attr}")
        if isinstance(base, External):
            return External(f"{base.name}.{attr}")
        return None

    # --- calls reached ----------------------------------------------------------------------------

    def reached(
        self, module: Module, body: Iterable[ast.AST], cls: ast.ClassDef | None, seen: set[int]
    ) -> Iterator[tuple[Module, ast.Call, Target]]:
        """Each call under `body` (not inside nested definitions) and under what it calls, with
        what its callee resolves to; each function, class and module is followed once."""
        for call in calls(body):
            target = self.resolve(module, call.func, cls)
            yield module, call, target
            yield from self.follow(target, seen)

    def follow(self, target: Target, seen: set[int]) -> Iterator[tuple[Module, ast.Call, Target]]:
        if isinstance(target, Function) and id(target.node) not in seen:
            seen.add(id(target.node))
            body = [target.node.body] if isinstance(target.node, ast.Lambda) else target.node.body
            yield from self.reached(target.module, body, target.cls, seen)
        elif isinstance(target, Class | Instance):
            for name in ("__init__", "__post_init__") if isinstance(target, Class) else ("__call__",):
                found = class_method(target.node, name)
                if found is not None:
                    yield from self.follow(Function(target.module, found, target.node), seen)


def class_method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    return next(
        (n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name),
        None,
    )


def calls(nodes: Iterable[ast.AST]) -> Iterator[ast.Call]:
    """Calls under `nodes` in source order, not inside nested function, lambda or class bodies
    (those run only when called)."""
    stack = list(nodes)[::-1]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(list(ast.iter_child_nodes(node))[::-1])
