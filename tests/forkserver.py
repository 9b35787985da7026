"""The tests' way to run the golfpack CLI as a user does, without paying torch's import each
time: a fork server (one per xdist worker) imports torch and the CLI once, then forks a child
per command. A child starts in the state a fresh ``python -m golfpack.packer`` reaches after
those imports; it gets its own stdin (``/dev/null``), stdout, stderr, working folder and exit
status, and its CPU time counts from zero. A command that needs another environment than the
server's (``env=``, or ``os.environ`` changed since the server started: what Python reads at
start, such as ``PYTHONHASHSEED`` or ``PYTHONPATH``, cannot change after a fork) runs in a
fresh process instead."""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# ``measured``: the command's run, and on stderr its peak RSS (``VmHWM``, the process's own) and
# the CPU seconds it used after the imports (what an attack costs, tests/hostile.py)
PRELUDE = """import json, os, resource, sys, traceback
import torch
import golfpack.model.checkpoint
from golfpack.packer.cli import main
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
def measured(argv, measure):
    start = cpu()
    try:
        main(argv, prog_name="python -m golfpack.packer")
    except SystemExit as e:
        rc = e.code
    else:
        rc = 0
    if measure:
        hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]
        print('PEAK_KB', hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cpu() - start,
              file=sys.stderr)
    if rc is None or isinstance(rc, int):
        return rc or 0
    print(rc, file=sys.stderr)
    return 1
"""
SERVER = PRELUDE + """
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        import signal
        signal.alarm(req["timeout"])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
        os.dup2(os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
        rc = 1
        try:
            if req["cwd"]:
                os.chdir(req["cwd"])
            rc = measured(req["args"], req["measure"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""
FRESH = PRELUDE + "sys.exit(measured(sys.argv[2:], sys.argv[1] == '1'))"  # the same, in a process of its own

_base_env: dict[str, str] | None = None  # the worker's environment at session start (``start``)
_server: subprocess.Popen | None = None
served = 0  # commands the fork server ran (tests/test_cli.py checks it serves them)


# What the worker process sets in its own environment, not a test: pytest, each test's name;
# torch, its inductor cache folder once anything imports torch._inductor (a train() in process).
OWN_VARIABLES = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}


def _environment() -> dict[str, str]:
    """``os.environ`` but for :data:`OWN_VARIABLES`."""
    return {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}


def start() -> None:
    """Take the environment the server runs in: called once a session starts, before any test
    can change ``os.environ`` (a session fixture in conftest.py)."""
    global _base_env
    _base_env = _environment()


def _fork_server() -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, env=_base_env)
        atexit.register(_server.kill)
    return _server


def run_cli(args: list[str], *, env: dict | None = None, cwd=None, timeout: int = 900,
            measure: bool = False) -> subprocess.CompletedProcess:
    """``python -m golfpack.packer ARGS``, forked from the server where its environment allows;
    ``measure``: with its peak RSS and CPU seconds on stderr (``PEAK_KB`` line)."""
    if env is None and _base_env is not None and _environment() == _base_env:
        global served
        server = _fork_server()
        served += 1
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            server.stdin.write(json.dumps({"args": args, "cwd": str(cwd or ""), "out": str(out), "err": str(err),
                                           "timeout": timeout, "measure": measure}) + "\n")
            server.stdin.flush()
            rc = json.loads(server.stdout.readline())
            return subprocess.CompletedProcess(args, rc, out.read_text(errors="replace"), err.read_text(errors="replace"))
    cmd = [sys.executable, "-c", FRESH, "1", *args] if measure else [sys.executable, "-m", "golfpack.packer", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
