"""The handler check on the shapes a hostile review got past it: each worker here also loads its
model once at module level, so only the per-request load (or what the check cannot see) is found.
A load is an error at its line; what the check cannot see into is a warning at its line, never a
silent pass; the handler is found however runpod.serverless.start is given it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import REPO

from buildtool.config.matrix import load_matrix
from buildtool.policy import handlers
from buildtool.policy.pymodules import HandlerProblem

LOADERS = handlers.Loaders(("SentenceTransformer", "from_pretrained", "torch.load"), ("vllm serve",))
HEAD = """\
import asyncio, functools, importlib, os, subprocess
import runpod, torch
import sentence_transformers
from concurrent.futures import ThreadPoolExecutor
from sentence_transformers import SentenceTransformer
MODEL = SentenceTransformer("/models/x")
"""
START = 'runpod.serverless.start({"handler": handler})\n'


def analyse(
    tmp_path: Path, body: str, head: str = HEAD, start: str = START
) -> tuple[list[HandlerProblem], int]:
    """The problems of a worker made of `head`, `body` and `start`, and the line marked `# here`."""
    source = head + textwrap.dedent(body) + start
    path = tmp_path / "handler.py"
    path.write_text(source)
    marked = [n for n, line in enumerate(source.splitlines(), start=1) if "# here" in line]
    return handlers.analyse(path, LOADERS), marked[0] if marked else 0


def only(problems: list[HandlerProblem]) -> HandlerProblem:
    assert len(problems) == 1, [p.message for p in problems]
    return problems[0]


PER_REQUEST_LOADS = {
    "functools.partial": """
        def handler(job):
            return functools.partial(SentenceTransformer, job["model"])()  # here
    """,
    "a partial bound first": """
        def handler(job):
            make = functools.partial(SentenceTransformer, device="cuda")
            return make(job["model"]).encode(job["texts"])  # here
    """,
    "importlib.import_module": """
        def handler(job):
            return importlib.import_module("sentence_transformers").SentenceTransformer(job["m"])  # here
    """,
    "getattr with a literal name": """
        def handler(job):
            return getattr(sentence_transformers, "SentenceTransformer")(job["m"])  # here
    """,
    "exec of a literal": """
        def handler(job):
            exec("SentenceTransformer('/models/y')")  # here
    """,
    "eval of a literal": """
        def handler(job):
            return eval("SentenceTransformer('/models/y')").encode(job["texts"])  # here
    """,
    "asyncio.to_thread": """
        async def handler(job):
            return await asyncio.to_thread(SentenceTransformer, job["model"])  # here
    """,
    "loop.run_in_executor": """
        async def handler(job):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, SentenceTransformer, job["model"])  # here
    """,
    "an executor's submit": """
        def handler(job):
            with ThreadPoolExecutor() as pool:
                return pool.submit(SentenceTransformer, job["model"]).result()  # here
    """,
    "torch.hub.load": """
        def handler(job):
            return torch.hub.load("pytorch/vision", job["model"])  # here
    """,
    "import ... as inside the handler": """
        def handler(job):
            import sentence_transformers as st
            return st.SentenceTransformer(job["model"])  # here
    """,
    "from ... import ... as inside the handler": """
        def handler(job):
            from sentence_transformers import SentenceTransformer as ST
            return ST(job["model"])  # here
    """,
    "a closure given to asyncio.to_thread": """
        async def handler(job):
            def load():
                return SentenceTransformer(job["model"])  # here
            return await asyncio.to_thread(load)
    """,
    "a loader passed to a helper that calls it": """
        def build(factory, name):
            return factory(name)  # here
        def handler(job):
            build(str, "warm")  # the helper once without a loader: it is followed again with one
            return build(SentenceTransformer, job["model"])
    """,
    "a loader as a parameter's default": """
        def handler(job, make=SentenceTransformer):
            return make(job["model"])  # here
    """,
    "a loader picked by a condition": """
        def handler(job):
            make = SentenceTransformer if job.get("fresh") else None
            return (make or str)(job["model"])  # here
    """,
    "threading.Thread(target=...)": """
        import threading
        def handler(job):
            threading.Thread(target=SentenceTransformer, args=(job["model"],)).start()  # here
    """,
    "a dispatch table indexed at run time": """
        FACTORIES = {"echo": str, "embed": SentenceTransformer}
        def handler(job):
            return FACTORIES[job["kind"]](job["model"])  # here
    """,
}
PER_REQUEST_SERVERS = {
    "os.system": """
        def handler(job):
            os.system("vllm serve /models/llm &")  # here
    """,
    "subprocess.run with shell=True": """
        def handler(job):
            subprocess.run("vllm serve m", shell=True)  # here
    """,
    "sh -c": """
        def handler(job):
            subprocess.Popen(["sh", "-c", "vllm serve m"])  # here
    """,
    "sh -c with the script in a local": """
        def handler(job):
            script = "exec vllm serve " + job["model"]
            subprocess.Popen(["sh", "-c", script])  # here
    """,
    "an f-string through asyncio's shell": """
        async def handler(job):
            await asyncio.create_subprocess_shell(f"vllm serve {job['model']}")  # here
    """,
}


@pytest.mark.parametrize("body", PER_REQUEST_LOADS.values(), ids=PER_REQUEST_LOADS)
def test_a_handler_loading_per_request_beside_a_module_level_load_is_refused(
    tmp_path: Path, body: str
) -> None:
    problems, line = analyse(tmp_path, body)
    problem = only(problems)
    assert handlers.severity(problem) == "error"
    assert problem.message.startswith("the handler '")
    assert " loads its model per request (" in problem.message
    assert "SentenceTransformer" in problem.message or "torch.hub.load(...)" in problem.message
    assert problem.where.line == line and problem.where.file == tmp_path / "handler.py"
    assert problem.hint and "at module level" in problem.hint


def test_a_handler_loader_is_named_as_python_resolves_it(tmp_path: Path) -> None:
    """Not as spelled: the local alias and the import_module call are followed to the class."""
    for name in ("importlib.import_module", "import ... as inside the handler", "asyncio.to_thread"):
        problems, _ = analyse(tmp_path, PER_REQUEST_LOADS[name])
        assert "(sentence_transformers.SentenceTransformer" in only(problems).message, name
    problems, _ = analyse(tmp_path, PER_REQUEST_LOADS["loop.run_in_executor"])
    assert only(problems).message.endswith(
        "(sentence_transformers.SentenceTransformer, called through loop.run_in_executor)"
    )


@pytest.mark.parametrize("body", PER_REQUEST_SERVERS.values(), ids=PER_REQUEST_SERVERS)
def test_a_handler_starting_a_model_server_per_request_is_refused(tmp_path: Path, body: str) -> None:
    problems, line = analyse(tmp_path, body)
    problem = only(problems)
    assert handlers.severity(problem) == "error"
    assert (
        problem.message == "the handler 'handler' loads its model per request (a 'vllm serve' server process)"
    )
    assert problem.where.line == line


UNSEEN = {
    "exec of code built at run time": (
        """
        def handler(job):
            exec(job["input"]["code"])  # here
        """,
        "runs code built at run time (exec(job['input']['code']))",
        "not through exec or eval",
    ),
    "eval of a name": (
        """
        def handler(job):
            code = job["input"]["code"]
            return eval(code)  # here
        """,
        "runs code built at run time (eval(code))",
        "not through exec or eval",
    ),
    "importlib.import_module of a computed name": (
        """
        def handler(job):
            importlib.import_module(job["input"]["module"])  # here: its module-level code runs
            return MODEL.encode(job["texts"])
        """,
        "imports a module named at run time (importlib.import_module(job['input']['module']))",
        "import the module by name",
    ),
    "__import__ of a computed name, called": (
        """
        def handler(job):
            return __import__(job["lib"]).load(job["model"])  # here
        """,
        "calls __import__(job['lib']).load(...), a name looked up at run time",
        "call the function by its name",
    ),
    "getattr with a computed name, called": (
        """
        def handler(job):
            return getattr(sentence_transformers, job["cls"])(job["model"])  # here
        """,
        "calls getattr(sentence_transformers, job['cls'])(...), a name looked up at run time",
        "call the function by its name",
    ),
    "getattr with a computed name, bound then called": (
        """
        def handler(job):
            make = getattr(sentence_transformers, job["cls"])
            return make(job["model"])  # here
        """,
        "calls getattr(sentence_transformers, job['cls'])(...), a name looked up at run time",
        "call the function by its name",
    ),
    "globals() indexed at run time": (
        """
        def handler(job):
            return globals()[job["fn"]](job)  # here
        """,
        "calls globals()[job['fn']](...), a name looked up at run time",
        "call the function by its name",
    ),
    "a shell command built at run time": (
        """
        def handler(job):
            os.system(job["input"]["command"])  # here
        """,
        "runs a shell command it cannot read (os.system(job['input']['command']))",
        "start model servers at module level",
    ),
    "sh -c with a script built at run time": (
        """
        def handler(job):
            subprocess.run(["sh", "-c", job["script"]])  # here
        """,
        "runs a shell command it cannot read (subprocess.run(['sh', '-c', job['script']]))",
        "start model servers at module level",
    ),
    "a program named at run time": (
        """
        def handler(job):
            return subprocess.Popen(job["argv"]).pid  # here
        """,
        "starts a process it cannot read (subprocess.Popen(job['argv']))",
        "start model servers at module level",
    ),
    "a loader passed to an unknown function": (
        """
        import somelib
        def handler(job):
            return somelib.cached(SentenceTransformer, job["model"])  # here
        """,
        "passes sentence_transformers.SentenceTransformer to somelib.cached(...), which may call it",
        "pass the model loaded at module level",
    ),
    "a lookup in a helper the handler calls": (
        """
        def run(job):
            return getattr(MODEL, job["method"])(job["texts"])  # here
        def handler(job):
            return run(job)
        """,
        "calls getattr(MODEL, job['method'])(...), a name looked up at run time",
        "call the function by its name",
    ),
}


@pytest.mark.parametrize(("body", "what", "fix"), UNSEEN.values(), ids=UNSEEN)
def test_what_the_handler_check_cannot_see_is_a_warning(
    tmp_path: Path, body: str, what: str, fix: str
) -> None:
    problems, line = analyse(tmp_path, body)
    problem = only(problems)
    assert handlers.severity(problem) == "warning"
    assert problem.message == (
        f"the handler 'handler' {what}: the check cannot see if that loads a model per request"
    )
    assert problem.where.line == line and problem.where.file == tmp_path / "handler.py"
    assert problem.hint and fix in problem.hint and "load the model once at module level" in problem.hint


def test_a_handler_warning_does_not_hide_a_missing_module_level_load(tmp_path: Path) -> None:
    body = """
        def handler(job):
            exec(job["code"])  # here
    """
    problems, line = analyse(tmp_path, body, head="import runpod\n")
    assert [(handlers.severity(p), p.where.line) for p in problems] == [("warning", line), ("error", 1)]
    assert problems[1].message == "the handler module loads no model at module level"


def test_a_handler_load_wins_over_a_warning_on_its_line(tmp_path: Path) -> None:
    body = """
        def handler(job):
            return importlib.import_module(job["lib"]).SentenceTransformer(job["model"])  # here
    """
    problem = only(analyse(tmp_path, body)[0])
    assert handlers.severity(problem) == "error" and "loads its model per request" in problem.message


LEGITIMATE = {
    "the model's method in a thread": """
        async def handler(job):
            return await asyncio.to_thread(MODEL.encode, job["texts"])
    """,
    "the model's method in an executor": """
        async def handler(job):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(MODEL.encode, job["texts"]))
    """,
    "the loaded model called through a local": """
        def handler(job):
            model = MODEL
            embed = model.encode
            return embed(job["texts"])
    """,
    "a type check and a literal getattr": """
        def handler(job):
            assert isinstance(MODEL, SentenceTransformer)
            return getattr(MODEL, "encode")(job["texts"], batch_size=getattr(job, "size", 8))
    """,
    "literal commands that start no model server": """
        def handler(job):
            os.system("nvidia-smi -L")
            subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv"], check=True)
            subprocess.run(["sh", "-c", "df -h /runpod-volume"])
            return MODEL.encode(job["texts"])
    """,
}


@pytest.mark.parametrize("body", LEGITIMATE.values(), ids=LEGITIMATE)
def test_a_handler_using_its_module_level_model_passes(tmp_path: Path, body: str) -> None:
    assert analyse(tmp_path, body)[0] == []


STARTS = {
    "config= keyword": 'runpod.serverless.start(config={"handler": handler})\n',
    "start imported by name": 'from runpod.serverless import start\nstart({"handler": handler})\n',
    "a variable": 'cfg = {"handler": handler}\nrunpod.serverless.start(cfg)\n',
    "a variable in main()": """\
def main():
    cfg = {"handler": handler, "return_aggregate_stream": True}
    runpod.serverless.start(cfg)
if __name__ == "__main__":
    main()
""",
    "an item set later": 'cfg = {}\ncfg["handler"] = handler\nrunpod.serverless.start(config=cfg)\n',
    "dict() with ** of another": 'BASE = {"handler": handler}\nrunpod.serverless.start(dict(**BASE))\n',
}


@pytest.mark.parametrize("start", STARTS.values(), ids=STARTS)
def test_the_handler_is_found_however_start_is_given_it(tmp_path: Path, start: str) -> None:
    clean = """
        def handler(job):
            return MODEL.encode(job["texts"])
    """
    assert analyse(tmp_path, clean, start=start)[0] == []
    loading = """
        def handler(job):
            return SentenceTransformer(job["model"]).encode(job["texts"])  # here
    """
    problems, line = analyse(tmp_path, loading, start=start)
    assert only(problems).where.line == line and "loads its model per request" in problems[0].message


def test_a_handler_start_without_a_handler_entry_is_still_refused(tmp_path: Path) -> None:
    body = """
        def handler(job):
            return MODEL.encode(job["texts"])
    """
    problem = only(analyse(tmp_path, body, start='runpod.serverless.start({"handlers": handler})\n')[0])
    assert problem.message == "the handler '?' is not a function of the image's own files"
    assert handlers.severity(problem) == "error"


def test_the_repository_workers_have_no_handler_findings_not_even_warnings() -> None:
    policy = load_matrix(REPO / "matrix.yaml").policy
    loaders = handlers.Loaders(policy.model_loaders, policy.model_servers)
    workers = sorted((REPO / "images").glob("worker-*/app/handler.py"))
    assert len(workers) >= 3
    for path in workers:
        assert handlers.analyse(path, loaders) == [], path


def test_what_the_analysis_cannot_see_is_a_warning_of_the_rule_not_an_error(tmp_path: Path) -> None:
    from buildtool.policy import check_handler

    path = tmp_path / "handler.py"
    path.write_text(
        "import runpod\n"
        "from sentence_transformers import SentenceTransformer\n"
        "MODEL = SentenceTransformer('m')\n"
        "def handler(job):\n"
        "    code = job['input']['code']\n"
        "    exec(code)\n"
        "    return MODEL.encode(['x']).tolist()\n"
        "runpod.serverless.start({'handler': handler})\n"
    )
    findings = check_handler(path, ("SentenceTransformer",))
    assert [(f.severity, f.problem.location.line if f.problem.location else None) for f in findings] == [
        ("warning", 6)
    ]
