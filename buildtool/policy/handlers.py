"""Static analysis of a serverless worker: where does it load its model?

A worker must load its model once, when the module is imported, and never inside the handler (a
per-request load is a cold start per request, and OOM). Names are resolved the way Python would run
them, within the image's own files (handler_calls: imports, aliases, each function's locals, classes,
methods, getattr and import_module with literal names). A call of one of the policy's loaders (or of
torch.hub.load) is a load; so is passing a loader to what calls it (asyncio.to_thread,
run_in_executor, an executor's submit, partial, Thread), and starting a process whose command is one
of the policy's model servers (`vllm serve` through subprocess, os.system or a shell). What the check
cannot see into on the handler's path is a warning, never a silent pass: a name looked up at run
time, exec or eval of code built at run time, a command that is not literal, a loader passed to an
unknown function. That the worker waits for its server is checked where it runs: smoke's model.serve.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from buildtool.errors import Location, Severity
from buildtool.policy.handler_calls import DYNAMIC_IMPORTS, Resolver, named, own_nodes, short, unseen
from buildtool.policy.pymodules import (
    Class,
    External,
    Function,
    HandlerProblem,
    Instance,
    Module,
    ModuleRef,
    Target,
    calls,
    class_method,
)

DEFAULT_LOADERS = ("torch.hub.load",)
# Calls that start a process: where its argv starts and ends among the positional arguments.
SPAWNERS = {
    **{f"subprocess.{n}": (0, 1) for n in ("Popen", "run", "call", "check_call", "check_output")},
    "asyncio.create_subprocess_exec": (0, None),
    "pty.spawn": (0, 1),
    **{f"os.{n}": (1, 2) for n in ("execv", "execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp")},
    **{f"os.{n}": (1, None) for n in ("execl", "execle", "execlp", "execlpe")},
    **{f"os.{n}": (2, 3) for n in ("spawnv", "spawnve", "spawnvp", "spawnvpe")},
    **{f"os.{n}": (2, None) for n in ("spawnl", "spawnle", "spawnlp", "spawnlpe")},
}
SHELL_CALLS = ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput")
SHELLS = ("sh", "bash", "dash", "zsh", "ksh")
# Calls that call the callables passed to them (a loader passed is a load).
TAKERS: tuple[str, ...] = ("asyncio.to_thread", "threading.Thread", "threading.Timer", "map")
TAKERS += ("multiprocessing.Process", "to_thread.run_sync", "run_in_threadpool", "sync_to_async")
TAKER_METHODS: tuple[str, ...] = ("submit", "map", "starmap", "imap", "imap_unordered", "apply")
TAKER_METHODS += ("apply_async", "map_async", "run_in_executor", "call_soon", "call_soon_threadsafe")
TAKER_METHODS += ("call_later", "run_sync")
# Calls that take a callable without calling it (a partial's call is resolved to its function).
INSPECTORS: tuple[str, ...] = ("isinstance", "issubclass", "cast", "hasattr", "type", "id", "callable")
INSPECTORS += ("print", "repr", "functools.partial")
FIX = {  # how to make what the check cannot see visible
    "lookup": "call the function by its name, or pick it from a module-level dict of named functions",
    "pass": "pass the model loaded at module level, not its loader",
    "exec": "call the code directly, not through exec or eval",
    "import": "import the module by name at the top of the file and call its functions",
    "command": "start model servers at module level, with the command as a list of literal words",
}


@dataclass(frozen=True)
class Loaders:
    calls: tuple[str, ...]  # policy.model_loaders
    servers: tuple[str, ...] = ()  # policy.model_servers

    @property
    def known(self) -> tuple[str, ...]:
        return (*self.calls, *DEFAULT_LOADERS)


@dataclass(frozen=True)
class HandlerWarning(HandlerProblem):
    """Something on the handler's path the check cannot see into: reported, not refused."""


def severity(problem: HandlerProblem) -> Severity:
    return "warning" if isinstance(problem, HandlerWarning) else "error"


@dataclass(frozen=True)
class Event:
    """A call that loads the model (fix None), or one the check cannot see into (and its fix)."""

    where: Location
    what: str
    fix: str | None = None


class Walk:
    """The calls a body makes and those of what it calls, each function followed once."""

    def __init__(self, image: Resolver, loaders: Loaders, skip: Target = None) -> None:
        self.image, self.loaders = image, loaders
        # Each function once, and again for each other set of loaders (or lookups) passed to it.
        self.seen: set[tuple[int, tuple[str, ...]]] = set()
        if isinstance(skip, Function):
            self.seen.add((id(skip.node), ()))

    def body(
        self, scope: Module, nodes: Sequence[ast.AST], cls: ast.ClassDef | None, at: Location | None = None
    ) -> Iterator[Event]:
        for call in calls(nodes):
            where = at or Location(scope.path, call.lineno)
            targets = self.image.alternatives(scope, call.func, cls)
            for target in targets:
                loader, hidden = named(target, self.loaders.known), unseen(target)
                if loader:
                    yield Event(where, f"{loader}(...)")
                elif hidden is not None:
                    yield Event(where, f"calls {hidden}(...), a name looked up at run time", FIX["lookup"])
                elif isinstance(target, External):
                    yield from self.external(scope, call, target.name, cls, where)
                elif isinstance(target, Function | Class | Instance):
                    yield from self.follow(target, self.passed(scope, call, target, cls))
            yield from self.arguments(scope, call, targets, cls, where)

    def follow(self, target: Target, passed: dict[str, Target]) -> Iterator[Event]:
        telling = tuple(sorted(n for n, t in passed.items() if named(t, self.loaders.known) or unseen(t)))
        if isinstance(target, Function) and (id(target.node), telling) not in self.seen:
            self.seen.add((id(target.node), telling))
            node = target.node
            yield from self.body(
                self.image.scope(target, passed),
                [node.body] if isinstance(node, ast.Lambda) else node.body,
                target.cls,
            )
        elif isinstance(target, Class | Instance):
            for name in ("__init__", "__post_init__") if isinstance(target, Class) else ("__call__",):
                found = class_method(target.node, name)
                if found is not None:
                    given = passed if name != "__post_init__" else {}
                    yield from self.follow(Function(target.module, found, target.node), given)

    def passed(
        self, scope: Module, call: ast.Call, target: Target, cls: ast.ClassDef | None
    ) -> dict[str, Target]:
        """The arguments of `call` by parameter name of what it calls, as far as they resolve."""
        node = target.node if isinstance(target, Function) else None
        if isinstance(target, Class | Instance):
            node = class_method(target.node, "__init__" if isinstance(target, Class) else "__call__")
        if node is None:
            return {}
        names = [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
        method = isinstance(target, Class | Instance) or (isinstance(target, Function) and target.cls)
        names = names[1:] if method and names[:1] in (["self"], ["cls"]) else names
        pairs = [(n, a) for n, a in zip(names, call.args, strict=False) if not isinstance(a, ast.Starred)]
        pairs += [(k.arg, k.value) for k in call.keywords if k.arg]
        resolved = {name: self.image.resolve(scope, arg, cls) for name, arg in pairs}
        return {name: t for name, t in resolved.items() if t is not None}

    def arguments(
        self, scope: Module, call: ast.Call, targets: list[Target], cls: ast.ClassDef | None, where: Location
    ) -> Iterator[Event]:
        """Callables passed to the call: a loader passed to what calls it is a load; functions of
        the image are followed (they run when called)."""
        attr = call.func.attr if isinstance(call.func, ast.Attribute) else None
        taker = attr in TAKER_METHODS or any(named(t, TAKERS) for t in targets)
        inspector = any(named(t, INSPECTORS) for t in targets)
        local = any(isinstance(t, Function | Class | Instance) for t in targets)
        via = short(call.func)
        for argument in [*call.args, *(k.value for k in call.keywords)]:
            value = argument.value if isinstance(argument, ast.Starred) else argument
            for target in self.image.alternatives(scope, value, cls):
                loader, hidden = named(target, self.loaders.known), unseen(target)
                if loader and taker:
                    yield Event(where, f"{loader}, called through {via}")
                elif loader and not (inspector or local):
                    yield Event(where, f"passes {loader} to {via}(...), which may call it", FIX["pass"])
                elif hidden is not None and taker:
                    yield Event(
                        where, f"passes {hidden} to {via}, a name looked up at run time", FIX["lookup"]
                    )
                elif (isinstance(target, Function) and not inspector) or (
                    isinstance(target, Class) and taker
                ):
                    yield from self.follow(target, {})

    def external(
        self, scope: Module, call: ast.Call, name: str, cls: ast.ClassDef | None, where: Location
    ) -> Iterator[Event]:
        bare, first = name.removeprefix("builtins."), call.args[0] if call.args else None
        text = self.image.literal(scope, first) if first is not None else None
        if bare in ("exec", "eval"):
            try:
                code = ast.parse(text) if text is not None else None
            except SyntaxError:
                code = None
            if code is None:
                yield Event(where, f"runs code built at run time ({short(call)})", FIX["exec"])
            else:
                yield from self.body(scope, code.body, cls, at=where)
        elif bare in DYNAMIC_IMPORTS and text is None:
            yield Event(where, f"imports a module named at run time ({short(call)})", FIX["import"])
        elif bare.startswith("runpy."):
            yield Event(where, f"runs a module per request ({short(call)})", FIX["import"])
        elif bare == "importlib.reload" and first is not None:
            module = self.image.resolve(scope, first, cls)
            if isinstance(module, ModuleRef):
                yield from self.body(module.module, module.module.tree.body, None, at=where)
        else:
            yield from self.command(scope, call, name, where)

    def command(self, scope: Module, call: ast.Call, name: str, where: Location) -> Iterator[Event]:
        """A process started: a model server's command is a load; one it cannot read is unseen."""
        spawner = next((s for s in SPAWNERS if named(External(name), (s,))), None)
        shell = named(External(name), (*SHELL_CALLS, "asyncio.create_subprocess_shell"))
        if not (spawner or shell):
            return
        start, stop = SPAWNERS[spawner] if spawner else (0, 1)
        argv = call.args[start:stop] or [k.value for k in call.keywords if k.arg == "args"]
        words = [w for a in argv for w in self.image.words(scope, a)]
        flag = next((k.value for k in call.keywords if k.arg == "shell"), None)
        if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
            shell = shell or "shell=True"
        text = " ".join(" ".join(w for w in words if w is not None).split())
        server = next((s for s in self.loaders.servers if s in text), None)
        if server:
            yield Event(where, f"a '{server}' server process")
            return
        program = words[0] if words else None
        if program is not None and PurePosixPath(program.strip()).name in SHELLS and len(words) > 1:
            shell = shell or program
        if (shell and None in words) or program is None:
            what = "runs a shell command" if shell else "starts a process"
            yield Event(where, f"{what} it cannot read ({short(call)})", FIX["command"])


def _starts(
    image: Resolver, scope: Module, body: list[ast.stmt], cls: ast.ClassDef | None
) -> Iterator[tuple[Module, ast.Call]]:
    """Every call of the module with the scope it runs in (module level, or a function's locals)."""
    for node in own_nodes(body):
        if isinstance(node, ast.Call):
            yield scope, node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _starts(image, image.scope(Function(scope, node, cls)), node.body, cls)
        elif isinstance(node, ast.ClassDef):
            yield from _starts(image, scope, node.body, node)


def _handler_expression(image: Resolver, module: Module) -> tuple[Module, ast.expr | None, bool]:
    """The value of "handler" in runpod.serverless.start(config), the scope it is read in, and
    whether start was called."""
    started = False
    for scope, call in _starts(image, module, module.tree.body, None):
        target = image.resolve(scope, call.func, None)
        if not (isinstance(target, External) and target.name.endswith("serverless.start")):
            continue
        started = True
        config = next((k.value for k in call.keywords if k.arg == "config"), None)
        config = call.args[0] if call.args else config
        found = image.entry(scope, config) if config is not None else None
        if found:
            return found[0], found[1], True
    return module, None, started


def analyse(path: Path, loaders: Loaders) -> list[HandlerProblem]:
    """What is wrong with where the worker `path` loads its model; empty when nothing is. Warnings
    (HandlerWarning, see severity()) say what the check could not see into."""
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


def _analyse(path: Path, loaders: Loaders) -> list[HandlerProblem]:
    image = Resolver(path.parent, loaders.known)
    module = image.load(path)
    if module is None:
        return image.problems
    scope, expression, started = _handler_expression(image, module)
    if not started:
        return [
            HandlerProblem(
                "the handler module never calls runpod.serverless.start({'handler': fn})",
                Location(path, 1),
                'end it with runpod.serverless.start({"handler": handler})',
            )
        ]
    handler = image.resolve(scope, expression, None) if expression is not None else None
    if not isinstance(handler, Function):
        shown = ast.unparse(expression) if expression is not None else "?"
        return [
            HandlerProblem(
                f"the handler '{shown}' is not a function of the image's own files",
                Location(path, expression.lineno if expression is not None else 1),
                "pass a function (or lambda, or method) defined in the worker's modules",
            )
        ]
    name = getattr(handler.node, "name", "<lambda>")
    loads: dict[Location, HandlerProblem] = {}
    warnings: dict[Location, HandlerProblem] = {}
    for event in Walk(image, loaders).follow(handler, {}):
        if event.fix is None:
            message = f"the handler '{name}' loads its model per request ({event.what})"
            hint = f"load the model once at module level (model = ... above def {name}) and use it inside"
            loads.setdefault(event.where, HandlerProblem(message, event.where, hint + " the handler"))
        else:
            message = f"the handler '{name}' {event.what}: the check cannot see if that loads a model"
            hint = f"{event.fix}; load the model once at module level"
            warnings.setdefault(event.where, HandlerWarning(message + " per request", event.where, hint))
    problems = [*loads.values(), *(w for where, w in warnings.items() if where not in loads)]
    if loads:
        return image.problems + problems
    # Module-level code runs once per worker: the import of the handler module, with the image's
    # own modules it imports (their module-level code) and what that code calls.
    walk = Walk(image, loaders, skip=handler)
    modules_done: set[str] = set()

    def module_level(mod: Module) -> Iterator[Event]:
        if mod.name in modules_done:
            return
        modules_done.add(mod.name)
        for qualified in mod.imports.values():
            for candidate in (qualified, qualified.rpartition(".")[0]):
                local = image.module(candidate) if candidate else None
                if local is not None:
                    yield from module_level(local)
        yield from walk.body(mod, mod.tree.body, None)

    if not any(event.fix is None for event in module_level(module)):
        servers = f", or start a model server ({', '.join(loaders.servers)})" if loaders.servers else ""
        problems.append(
            HandlerProblem(
                "the handler module loads no model at module level",
                Location(path, 1),
                f"call one of {', '.join(loaders.calls)} at module level{servers}",
            )
        )
    return image.problems + problems
