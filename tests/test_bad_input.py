"""Bad input, from a corpus: every file in tests/bad_input/ is a malformed config (``config_*``, run
with ``raysparse train``) or sweep file (``sweep_*``, run with ``raysparse sweep``). Each must give
exit status 2 and one line on stderr naming the field (the file's first line, ``# expect: <regex>``),
with nothing printed before it but the line naming the code a config calls by import path, no Ray
runtime started and no MLflow store or run created.

The CLI runs in-process for speed. Ray and the embedded MLflow server are guarded there: a case that
is wrongly accepted fails at once with ``WorkStarted`` instead of running a sweep.
"""

import glob
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "bad_input"
CASES = sorted(CORPUS.glob("*.yaml"))
RAY_SESSIONS = "/tmp/ray/session_*"


class WorkStarted(AssertionError):
    """The CLI accepted the input and went on to start Ray or the MLflow server."""


assert len(CASES) >= 30, f"the bad-input corpus needs at least 30 cases, found {len(CASES)} in {CORPUS}"


def expected_pattern(path: Path) -> str:
    # bytes: a case may be a file that is not UTF-8 past its first line
    first = next(iter(path.read_bytes().decode("utf-8", "replace").splitlines()), "")
    assert first.startswith("# expect: "), f"{path.name}: the first line must be '# expect: <regex>'"
    return first.removeprefix("# expect: ").strip()


def without_calls_line(err: str) -> str:
    """stderr less its first line where that names the code the config calls by import path
    (printed before any of it is called)."""
    from raysparse.zoo.user_code import CALLS_CODE

    first, _, rest = err.partition("\n")
    return rest if first.startswith(CALLS_CODE) else err


def command(path: Path) -> str:
    kind = path.name.split("_", 1)[0]
    assert kind in ("config", "sweep"), f"{path.name}: name it config_<what>.yaml or sweep_<what>.yaml"
    return "train" if kind == "config" else "sweep"


def ray_sessions_of(pid: int, before: set[str]) -> list[str]:
    """New Ray session directories started by process ``pid`` (Ray names them ..._<pid of the driver>):
    sessions that other processes start meanwhile (a sweep elsewhere on this machine) do not count."""
    return sorted(s for s in set(glob.glob(RAY_SESSIONS)) - before if s.endswith(f"_{pid}"))


@pytest.fixture
def guarded(monkeypatch):
    """Make starting Ray or the embedded MLflow server fail at once (see WorkStarted)."""
    import ray

    import raysparse.search.tuner
    import raysparse.tracking
    import raysparse.tracking.server

    def refuse(*args, **kwargs):
        raise WorkStarted("bad input was accepted: the CLI went on to start Ray or the MLflow server")

    monkeypatch.setattr(ray, "init", refuse)
    for module in (raysparse.search.tuner, raysparse.tracking, raysparse.tracking.server):
        monkeypatch.setattr(module, "ensure_local_server", refuse, raising=False)
    return ray


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_input_exits_2_with_one_line_naming_the_field(path, tmp_path, monkeypatch, capsys, guarded):
    from raysparse.cli import main

    pattern = expected_pattern(path)
    home = tmp_path / "home"
    monkeypatch.setenv("RAYSPARSE_HOME", str(home))
    ray = guarded
    ray_was_up = ray.is_initialized()
    sessions = set(glob.glob(RAY_SESSIONS))
    capsys.readouterr()

    status = main([command(path), str(path)])
    out, err = capsys.readouterr()
    err = without_calls_line(err)

    assert status == 2, f"exit status {status}; stderr: {err!r}"
    assert "Traceback" not in err
    assert err.startswith("raysparse: error: "), err
    assert re.search(pattern, err), f"stderr {err!r} does not match {pattern!r}"
    assert not home.exists() or not any(home.iterdir()), f"files in RAYSPARSE_HOME: {sorted(home.rglob('*'))}"
    assert ray_was_up or not ray.is_initialized()
    assert ray_sessions_of(os.getpid(), sessions) == []
    assert len(err.splitlines()) == 1, f"stderr is not one line: {err!r}"
    assert out == "", f"printed before the error: {out!r}"


SUBPROCESS_CASES = [
    "config_unknown_method", "sweep_objective_unknown_metric", "config_invalid_yaml_unclosed_bracket",
    "config_model_factory_raises", "sweep_data_factory_float_labels",
]


def test_real_process_exits_2_without_traceback(tmp_path):
    """The CLI as a user runs it: three representative cases, run side by side."""
    paths = [CORPUS / f"{stem}.yaml" for stem in SUBPROCESS_CASES]
    home = tmp_path / "home"
    env = {**os.environ, "RAYSPARSE_HOME": str(home)}
    sessions = set(glob.glob(RAY_SESSIONS))
    running = [
        subprocess.Popen([sys.executable, "-m", "raysparse.cli", command(p), str(p)], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in paths
    ]
    for path, process in zip(paths, running):
        out, err = process.communicate(timeout=120)
        err = without_calls_line(err)
        assert process.returncode == 2, f"{path.name}: exit status {process.returncode}; stderr: {err!r}"
        assert "Traceback" not in err, f"{path.name}: {err}"
        assert re.search(expected_pattern(path), err), f"{path.name}: {err!r}"
        assert ray_sessions_of(process.pid, sessions) == [], path.name
    assert not home.exists() or not any(home.iterdir()), f"files in RAYSPARSE_HOME: {sorted(home.rglob('*'))}"


ALIAS_BOMBS = ["sweep_alias_bomb_in_when", "sweep_alias_bomb_in_base", "config_alias_bomb"]
# the same 9 levels of 9 aliases as a --set value, in YAML's flow style
SET_BOMB = "[&a [1,1,1,1,1,1,1,1,1], " + ", ".join(f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in
                                                 zip("abcdefgh", "bcdefghi")) + "]"
MEMORY_CAP = 2 * 2**30  # heap and other private memory; each bomb used to grow to 10 GB
# the cases through the CLI's main in one process (one start-up, not four): each case's exit
# status and stderr, as JSON
RUN_CASES = """
import contextlib, io, json, sys
from raysparse.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    results.append([status, err.getvalue()])
print(json.dumps(results))
"""


def _capped_memory():
    # RLIMIT_DATA, not RLIMIT_AS: the CUDA build of torch maps ~5 GB of address space at import
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_CAP, MEMORY_CAP))


def test_yaml_alias_bombs_are_refused_as_read_in_a_memory_capped_process(tmp_path):
    """A "billion laughs" (9 levels of 9 aliases) in a `when` value, a base config, a train config
    and a --set value: one line and exit 2 each, not a MemoryError after minutes (nor Ray started)."""
    cases = [([command(p), str(p)], expected_pattern(p)) for p in (CORPUS / f"{s}.yaml" for s in ALIAS_BOMBS)]
    cases.append((["train", str(CORPUS / "parts" / "base_small.yaml"), "--set", f"epochs={SET_BOMB}"],
                  r"^raysparse: error: --set epochs: the value '\[&a .*\.\.\.\[\d+ characters cut\]\.\.\..*\]': "
                  r"its aliases expand it past 10000 values"))
    env = {**os.environ, "RAYSPARSE_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", RUN_CASES, json.dumps([argv for argv, _ in cases])], env=env,
                          capture_output=True, text=True, timeout=60, preexec_fn=_capped_memory)
    assert done.returncode == 0, done.stderr[-3000:]
    for (argv, pattern), (status, err) in zip(cases, json.loads(done.stdout.splitlines()[-1])):
        assert status == 2, f"{argv[:2]}: exit status {status}; stderr: {err[-2000:]!r}"
        assert err.count("\n") == 1 and re.search(pattern, err), f"{argv[:2]}: {err[-2000:]!r}"
    assert not (tmp_path / "home").exists()
