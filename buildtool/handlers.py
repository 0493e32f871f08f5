"""Static analysis of a serverless worker: where does it load its model?

A worker must load its model once, when the module is imported, and never inside the handler (a
per-request load is a cold start per request, and OOM). Names are resolved the way Python would
run them, within the image's own files (every .py file of the template directory): imports with
`as`, relative imports, module-level aliases (`load = torch.load`, `run = lambda job: ...`),
functions of other modules, classes (a constructor runs `__init__`), methods of module-level
objects and of `self`. A call whose resolved name is one of the policy's loaders is a load.
"""

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
class _Module:
    name: str
    path: Path
    tree: ast.Module
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    bindings: dict[str, ast.expr] = field(default_factory=dict)  # module-level name = expr
    imports: dict[str, str] = field(default_factory=dict)  # local name -> qualified name


# What a name or expression stands for.
@dataclass(frozen=True)
class _Function:
    module: _Module
    node: Def
    cls: ast.ClassDef | None = None  # a method's class (for self)


@dataclass(frozen=True)
class _Class:
    module: _Module
    node: ast.ClassDef


@dataclass(frozen=True)
class _Instance:
    module: _Module
    node: ast.ClassDef


@dataclass(frozen=True)
class _ModuleRef:
    module: _Module


@dataclass(frozen=True)
class _External:
    name: str  # dotted, as far as it is known: "torch.load", "sentence_transformers.SentenceTransformer"


@dataclass(frozen=True)
class _Dict:
    module: _Module
    node: ast.expr  # a dict display or a dict(...) call


_Target = _Function | _Class | _Instance | _ModuleRef | _External | _Dict | None


class _Image:
    """The image's Python files, parsed, with what each module binds at module level."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.modules: dict[str, _Module] = {}
        self.problems: list[HandlerProblem] = []

    def load(self, path: Path) -> _Module | None:
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
        module = _Module(name, path, tree)
        package = parts[:-1] if relative.name != "__init__" else parts
        for node in tree.body:
            self._bind(module, node, package)
        self.modules[name] = module
        return module

    def _bind(self, module: _Module, node: ast.stmt, package: tuple[str, ...]) -> None:
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

    def module(self, name: str) -> _Module | None:
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

    def resolve(self, module: _Module, expr: ast.expr, cls: ast.ClassDef | None, depth: int = 0) -> _Target:
        if depth > 20:
            return None
        if isinstance(expr, ast.Lambda):
            return _Function(module, expr)
        if isinstance(expr, ast.Dict):
            return _Dict(module, expr)
        if isinstance(expr, ast.Name):
            if expr.id == "self" and cls is not None:
                return _Instance(module, cls)
            return self.resolve_name(module, expr.id, depth + 1)
        if isinstance(expr, ast.Attribute):
            base = self.resolve(module, expr.value, cls, depth + 1)
            return self._attribute(base, expr.attr, depth + 1)
        if isinstance(expr, ast.Call):
            callee = self.resolve(module, expr.func, cls, depth + 1)
            if isinstance(callee, _Class):
                return _Instance(callee.module, callee.node)
            if isinstance(callee, _External):
                return _Dict(module, expr) if callee.name == "dict" else _External(callee.name + "()")
        return None

    def resolve_name(self, module: _Module, name: str, depth: int = 0) -> _Target:
        if name in module.functions:
            return _Function(module, module.functions[name])
        if name in module.classes:
            return _Class(module, module.classes[name])
        if name in module.bindings:
            return self.resolve(module, module.bindings[name], None, depth + 1)
        if name in module.imports:
            return self._qualified(module.imports[name], depth + 1)
        return _External(name)

    def _qualified(self, qualified: str, depth: int) -> _Target:
        local = self.module(qualified)
        if local is not None:
            return _ModuleRef(local)
        owner, _, attr = qualified.rpartition(".")
        parent = self.module(owner) if owner else None
        if parent is not None:
            return self.resolve_name(parent, attr, depth + 1)
        return _External(qualified)

    def _attribute(self, base: _Target, attr: str, depth: int) -> _Target:
        if isinstance(base, _ModuleRef):
            return self.resolve_name(base.module, attr, depth)
        if isinstance(base, _Class | _Instance):
            method = _method(base.node, attr)
            return (
                _Function(base.module, method, base.node) if method else _External(f"{base.node.name}.{attr}")
            )
        if isinstance(base, _External):
            return _External(f"{base.name}.{attr}")
        return None

    # --- calls reached ----------------------------------------------------------------------------

    def reached(
        self, module: _Module, body: Iterable[ast.AST], cls: ast.ClassDef | None, seen: set[int]
    ) -> Iterator[tuple[_Module, ast.Call, _Target]]:
        """Each call under `body` (not inside nested definitions) and under what it calls, with
        what its callee resolves to; each function, class and module is followed once."""
        for call in _calls(body):
            target = self.resolve(module, call.func, cls)
            yield module, call, target
            yield from self.follow(target, seen)

    def follow(self, target: _Target, seen: set[int]) -> Iterator[tuple[_Module, ast.Call, _Target]]:
        if isinstance(target, _Function) and id(target.node) not in seen:
            seen.add(id(target.node))
            body = [target.node.body] if isinstance(target.node, ast.Lambda) else target.node.body
            yield from self.reached(target.module, body, target.cls, seen)
        elif isinstance(target, _Class | _Instance):
            for name in ("__init__", "__post_init__") if isinstance(target, _Class) else ("__call__",):
                method = _method(target.node, name)
                if method is not None:
                    yield from self.follow(_Function(target.module, method, target.node), seen)


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    return next(
        (n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name),
        None,
    )


def _calls(nodes: Iterable[ast.AST]) -> Iterator[ast.Call]:
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


def _is_loader(target: _Target, loaders: tuple[str, ...]) -> str | None:
    if isinstance(target, _External):
        name = target.name.removesuffix("()")
        if any(name == loader or name.endswith("." + loader) for loader in loaders):
            return name
    return None


def _handler_expression(image: _Image, module: _Module) -> tuple[ast.expr | None, bool]:
    """The value of "handler" in runpod.serverless.start(config), and whether start was called."""
    started = False
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        target = image.resolve(module, node.func, None)
        if not (isinstance(target, _External) and target.name.endswith("serverless.start")):
            continue
        started = True
        config = image.resolve(module, node.args[0], None) if node.args else None
        if isinstance(config, _Dict):
            if isinstance(config.node, ast.Dict):
                for key, value in zip(config.node.keys, config.node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "handler":
                        return value, True
            elif isinstance(config.node, ast.Call):
                for keyword in config.node.keywords:
                    if keyword.arg == "handler":
                        return keyword.value, True
    return None, started


def analyse(path: Path, loaders: tuple[str, ...]) -> list[HandlerProblem]:
    """What is wrong with where the worker `path` loads its model; empty when nothing is."""
    try:
        return _analyse(path, loaders)
    except RecursionError:
        return [
            HandlerProblem(
                "the worker's calls nest too deeply to follow",
                Location(path, 1),
                "flatten the chain of calls from the handler, or split the worker into smaller modules",
            )
        ]


def _analyse(path: Path, loaders: tuple[str, ...]) -> list[HandlerProblem]:
    image = _Image(path.parent)
    module = image.load(path)
    if module is None:
        return image.problems
    expression, started = _handler_expression(image, module)
    if not started:
        return [
            HandlerProblem(
                "the handler module never calls runpod.serverless.start({'handler': fn})",
                Location(path, 1),
                'end it with runpod.serverless.start({"handler": handler})',
            )
        ]
    handler = image.resolve(module, expression, None) if expression is not None else None
    if not isinstance(handler, _Function):
        shown = ast.unparse(expression) if expression is not None else "?"
        return [
            HandlerProblem(
                f"the handler '{shown}' is not a function of the image's own files",
                Location(path, expression.lineno if expression is not None else 1),
                "pass a function (or lambda, or method) defined in the worker's modules",
            )
        ]
    name = getattr(handler.node, "name", "<lambda>")
    problems = []
    for where, call, target in image.follow(handler, set()):
        loader = _is_loader(target, loaders)
        if loader:
            problems.append(
                HandlerProblem(
                    f"the handler '{name}' loads its model per request ({loader}(...))",
                    Location(where.path, call.lineno),
                    f"load the model once at module level (model = ... above def {name}) and use it "
                    "inside the handler",
                )
            )
    if problems:
        return image.problems + problems
    # Module-level code runs once per worker: the import of the handler module, with the image's
    # own modules it imports (their module-level code) and what that code calls.
    seen: set[int] = {id(handler.node)}
    modules_done: set[str] = set()

    def module_level(mod: _Module) -> Iterator[_Target]:
        if mod.name in modules_done:
            return
        modules_done.add(mod.name)
        for qualified in mod.imports.values():
            for candidate in (qualified, qualified.rpartition(".")[0]):
                local = image.module(candidate) if candidate else None
                if local is not None:
                    yield from module_level(local)
        for _, _, target in image.reached(mod, mod.tree.body, None, seen):
            yield target

    if not any(_is_loader(t, loaders) for t in module_level(module)):
        problems.append(
            HandlerProblem(
                "the handler module loads no model at module level",
                Location(path, 1),
                f"call one of {', '.join(loaders)} at module level",
            )
        )
    return image.problems + problems
