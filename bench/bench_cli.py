"""The CLI as a user feels it (issue R): whole processes, each against its baseline in the same run.

  call        `kubeless-local call hello` against a running `run`, vs `curl` to the same URL
  --version   `kubeless-local --version`, vs `python -c pass` (the interpreter's own start on this machine)
  run         `kubeless-local run FILE --port P` → the first 200 on P (CLI start, engine, prepare, the runtime
              server's start), per runtime; its CPU column is the `run` process's own until then (with the
              probes and prepare steps it ran, without the runtime server)

Every case runs `--runs` times, the cases interleaved so a change in the machine's load touches them alike;
the table gives medians and minimums, and the CPU time of the quick cases (it moves less with the load).
`--before PATH` (another checkout, e.g. the main branch) runs the same cases with that tree's CLI in the
same run: the last column is then this tree's median over that one's.

    python bench/bench_cli.py --runs 15 --before /work/main
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = {  # runtime prefix → (file, text); the handler is <module>.hello
    "python": ("handler.py", 'def hello(event, context):\n    return "hello"\n'),
    "nodejs": ("handler.js", 'module.exports = { hello: (event, context) => "hello" };\n'),
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def env_for(tree, python=sys.executable):
    """The CLI's environment as its console script has it: `tree` on the import path, and the folder of the
    interpreter it runs with first on PATH, as `pyenv exec` (which runs the `kubeless-local` shim) and an
    activated venv put it: `python3.11` is then that interpreter, not a pyenv shim (a bash script that costs
    50–300 ms a run)."""
    path = os.path.dirname(python) + os.pathsep + os.environ.get("PATH", "")
    env = {**os.environ, "PYTHONPATH": str(tree), "PATH": path}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # set on this machine: a user's CLI reads its modules' cached bytecode
    return env


def elapsed_ms(argv, cwd, env):
    """(wall ms, CPU ms: user + system) of one whole process; the CPU time moves less with the machine's load."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError("%s exited %d" % (" ".join(argv), proc.returncode))
    return (time.perf_counter() - started) * 1000, (usage.ru_utime + usage.ru_stime) * 1000


def project(runtime):
    folder = Path(tempfile.mkdtemp(prefix="kl-bench-cli-"))
    name, text = HANDLERS[runtime.rstrip("0123456789.")]
    (folder / name).write_text(text)
    return folder, name


def start_run(tree, runtime, backend, python=sys.executable, timeout=120, where=None):
    """(process, port, ms to the first 200, folder) of `kubeless-local run` of a hello in `where` (folder, file name
    of project()'s), else in a new folder."""
    folder, name = where or project(runtime)
    port = free_port()
    argv = [python, "-m", "kubeless_local", "run", name, "--runtime", runtime, "--handler", "handler.hello"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*argv, "--port", str(port), "--backend", backend],
        cwd=folder,
        env=env_for(tree, python),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not answers("http://127.0.0.1:%d/" % port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc, None if where else folder)
            raise RuntimeError("%s did not answer within %ds (exit %s)" % (runtime, timeout, proc.poll()))
        time.sleep(0.002)
    return proc, port, (time.perf_counter() - started) * 1000, folder


def cpu_so_far_ms(pid):
    """CPU time (user + system) process `pid` has used, with its children it waited for (the toolchain probes,
    the prepare steps), not the runtime server it still runs: the CLI's own part of a start (10 ms steps)."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(tick) for tick in fields[11:15]) * 1000 / os.sysconf("SC_CLK_TCK")


def stop(proc, folder=None):
    """Stop a `run` (Ctrl-C); remove its `folder` if given."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def alternated(items, run):
    """`items` in order on even runs, reversed on odd ones: neither tree always follows the other."""
    items = list(items)
    return items if run % 2 == 0 else items[::-1]


def row(what, tree, xs, baseline=None, before=None, cpu=None):
    median = statistics.median(xs)
    cells = [what, tree, "%d" % len(xs), "%.0f" % median, "%.0f" % min(xs)]
    cells.append("%.0f" % statistics.median(cpu) if cpu else "")
    cells.append("%.1f×" % (median / statistics.median(baseline)) if baseline else "")
    cells.append("%.2f×" % (median / statistics.median(before)) if before else "")
    print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--runtimes", default="python3.11,nodejs20")
    parser.add_argument("--backend", default="process", choices=["process", "docker"])
    parser.add_argument("--before", type=Path, help="another checkout measured in the same run (e.g. /work/main)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter the CLI runs with (default this one), e.g. a fresh venv's bin/python with the package "
        "installed: without this machine's site-packages and their .pth files",
    )
    args = parser.parse_args()
    python = args.python
    trees = {"this": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    runtimes = args.runtimes.split(",")

    # A session to call, started by this tree (the admin API is the same for both).
    session, port, _, folder = start_run(ROOT, "python3.11", args.backend, python)
    url = "http://127.0.0.1:%d/" % port
    quick = {  # case → (argv, tree or None for a baseline)
        ("pass", None): [python, "-c", "pass"],
        ("curl", None): ["curl", "-s", "-o", "/dev/null", url],
    }
    for label in trees:
        quick[("--version", label)] = [python, "-m", "kubeless_local", "--version"]
        quick[("call", label)] = [python, "-m", "kubeless_local", "call", "handler"]
    times = {case: [] for case in quick}
    cpu = {case: [] for case in quick}
    starts = {(runtime, label): [] for runtime in runtimes for label in trees}
    start_cpu = {(runtime, label): [] for runtime in runtimes for label in trees}
    try:
        for case, argv in quick.items():  # warm the file cache, the .pyc files and the session
            elapsed_ms(argv, folder, env_for(trees.get(case[1] or "this", ROOT), python))
        for run in range(args.runs):
            for case, argv in alternated(quick.items(), run):
                wall, used = elapsed_ms(argv, folder, env_for(trees.get(case[1] or "this", ROOT), python))
                times[case].append(wall)
                cpu[case].append(used)
    finally:
        stop(session, folder)
    for runtime in runtimes:
        # Each tree's starts in a folder of their own, as a user's `run`s of one function: its hints are per
        # runtime (a template, a held server) and per folder (the docker backend's relay).
        where = {label: project(runtime) for label in trees}
        try:
            for label, tree in trees.items():
                stop(start_run(tree, runtime, args.backend, python, where=where[label])[0])  # fills the caches
            for run in range(args.runs):
                for label, tree in alternated(trees.items(), run):  # a start slows the next one (docker's clean-up)
                    proc, _, ms, _ = start_run(tree, runtime, args.backend, python, where=where[label])
                    used = cpu_so_far_ms(proc.pid)
                    stop(proc)
                    starts[(runtime, label)].append(ms)
                    start_cpu[(runtime, label)].append(used)
        finally:
            for folder, _ in where.values():
                shutil.rmtree(folder, ignore_errors=True)

    print("Load average at the end: %.1f %.1f %.1f; the CLI's interpreter: %s" % (*os.getloadavg(), python))
    print("| what | CLI | runs | median ms | min ms | CPU ms (median) | vs baseline | vs before |")
    print("|---|---|---|---|---|---|---|---|")
    row("`python -c pass` (baseline of --version)", "-", times[("pass", None)], cpu=cpu[("pass", None)])
    row("`curl` to the function (baseline of call)", "-", times[("curl", None)], cpu=cpu[("curl", None)])
    for command, baseline in (("--version", "pass"), ("call", "curl")):
        for label in trees:
            before = times.get((command, "before")) if label == "this" else None
            what = "`%s`" % ("call hello" if command == "call" else command)
            row(what, label, times[(command, label)], times[(baseline, None)], before, cpu[(command, label)])
    for runtime in runtimes:
        for label in trees:
            before = starts.get((runtime, "before")) if label == "this" else None
            what = "`run` %s → first 200 (%s)" % (runtime, args.backend)
            row(what, label, starts[(runtime, label)], None, before, start_cpu[(runtime, label)])


if __name__ == "__main__":
    main()
