"""Reading BuildKit's own words: rawjson progress, step kinds, the digest a base resolved to."""

from __future__ import annotations

import io

from buildtool.build.engine import BakeOutcome, Step, json_objects

DIGEST = "sha256:" + "ab" * 32


def test_the_base_digest_comes_from_the_from_step() -> None:
    steps = (
        Step("[internal] load build definition from Dockerfile", False, True, None),
        Step(f"[1/3] FROM docker.io/runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel@{DIGEST}", False, True, None),
        Step("[2/3] RUN pip install -r requirements.txt", True, True, None),
        Step("[3/3] COPY handler.py .", False, True, None),
    )
    outcome = BakeOutcome(True, {}, steps, None)
    assert outcome.base_digest("runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel") == DIGEST
    assert outcome.base_digest("runpod/pytorch:2.4.0") is None
    assert [s.name.split("] ")[1].split()[0] for s in outcome.dockerfile_steps] == ["RUN", "COPY"]


def test_rawjson_objects_and_plain_lines() -> None:
    text = (
        '{\n  "vertexes": [\n    {"digest": "d1", "name": "x}"}\n  ]\n}\n'
        '{\n  "logs": []\n}\n'
        "ERROR: failed to solve\n"
    )
    objects = list(json_objects(io.StringIO(text)))
    assert objects[0] == {"vertexes": [{"digest": "d1", "name": "x}"}]}
    assert objects[1] == {"logs": []}
    assert objects[2] == "ERROR: failed to solve"


def test_a_step_cancelled_by_another_failure_is_not_named_as_the_cause() -> None:
    """BuildKit cancels the steps in flight when something fails (here the cache export): the
    failure is buildx's last ERROR line, not the first step that reports 'context canceled'."""
    import json

    from buildtool.build.engine import _last_error, _Tracker

    def status(name: str, error: str) -> str:  # as --progress rawjson prints it: indented
        vertex = {"digest": name, "name": name, "completed": "2026-11-23T00:00:00Z", "error": error}
        return json.dumps({"vertexes": [vertex]}, indent=2) + "\n"

    cancelled = status("[5/6] RUN echo x", "failed to load ref: context canceled")
    failing = status("[6/6] RUN false", "process did not complete successfully: exit code: 1")
    last_words = "ERROR: failed to solve: error writing manifest blob: 400 Bad Request\n"
    tracker = _Tracker(io.StringIO(), None)
    tracker.consume(io.StringIO(cancelled + last_words))
    assert tracker.error is None
    assert _last_error(tracker.tail) == "failed to solve: error writing manifest blob: 400 Bad Request"
    tracker = _Tracker(io.StringIO(), None)
    tracker.consume(io.StringIO(cancelled + failing + last_words))
    assert (
        tracker.error == "step '[6/6] RUN false' failed: process did not complete successfully: exit code: 1"
    )


def test_a_failed_step_under_the_reproducible_shell_reads_as_the_template_wrote_it() -> None:
    """BuildKit quotes the process it ran: the templates' shell (macros.j2) and then the step."""
    from buildtool.build.engine import _without_shell

    said = (
        'process "/bin/sh -c touch /.buildtool-step && SOURCE_DATE_EPOCH=315532800 /bin/sh -c \\"$1\\" && '
        "{ find / -xdev -newer /.buildtool-step -exec touch -h -d @315532800 {} + 2>/dev/null; "
        "rm -f /.buildtool-step; touch -h -d @315532800 /; } "
        'buildtool-run pip install -r /tmp/requirements.lock" '
        "did not complete successfully: exit code: 1"
    )
    assert _without_shell(said) == (
        'process "/bin/sh -c pip install -r /tmp/requirements.lock" '
        "did not complete successfully: exit code: 1"
    )
    plain = 'process "/bin/sh -c false" did not complete successfully: exit code: 1'
    assert _without_shell(plain) == plain
