"""
C{python -m letsencrypt_resource status --json} on N sets, with a server
and without one, in wall and CPU time (the command's own, and with a
server the server's too, from C{/proc/PID/stat}): the first call after the
server is in service, the later calls, and the calls once it stopped.

    .venv/bin/python bench/statusscale.py --n 10000 --repeats 3 --first-port 51000

It runs on C{bench/twistdscale.py}'s configuration and a copy of
C{bench/warm.py}'s fabricated state.  With C{--tree} twice or more (a
tree exported before a change with C{git archive}, and this one), each
repeat runs every tree in turn, the server and the command both of that
tree, so that the trees are compared in the same minutes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT  # noqa: E402
from twistdscale import (  # noqa: E402
    TIMEOUT,
    TWISTD,
    addAddressArgument,
    compilePackage,
    cpuSeconds,
    moreFiles,
    writeConfiguration,
)
from warm import fabricated  # noqa: E402

#: The event that says every service listens: the server is in service.
LISTENING = "] 20209 "


def childCPU() -> float:
    """
    The CPU time (user and system) of this process's children so far.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timeStatus(tree: str, path: str, n: int) -> tuple[float, float]:
    """
    The wall and CPU time of C{status --json} on the configuration C{path}
    with the package of C{tree}; it must list C{n} sets.
    """
    cpu, start = childCPU(), time.perf_counter()
    output = subprocess.run(
        [sys.executable, "-m", "letsencrypt_resource", "status", "--json", "--config", path],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": tree},
        cwd=tree,
    ).stdout
    seconds, cpu = time.perf_counter() - start, childCPU() - cpu
    listed = output.count(b'"names"')
    if listed != n:
        raise RuntimeError(f"status listed {listed} sets of {n}")
    return seconds, cpu


def waitListening(log: str, process: subprocess.Popen[bytes]) -> None:
    """
    Wait until twistd, writing to C{log}, says that every service listens.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < TIMEOUT:
        if process.poll() is not None:
            raise RuntimeError(f"twistd exited; see {log}")
        with open(log, "rb") as stream:
            if LISTENING.encode() in stream.read():
                return
        time.sleep(0.2)
    raise RuntimeError(f"twistd timed out; see {log}")


def measureOnce(
    tree: str,
    workdir: str,
    n: int,
    calls: int,
    firstPort: int,
    pause: float = 0.0,
    facts: bool = True,
) -> dict[str, list[float]]:
    """
    Start twistd of C{tree} on N services, time C{calls} status commands
    against it, the first C{pause} seconds after every service listens,
    and as many once it stopped.

    @param facts: Whether the fabricated renewal states record their
        certificates' facts (see C{warm.fabricate}).
    """
    kept = fabricated(workdir, n, facts)
    result: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix=f"status-{n}-", dir=workdir) as directory:
        state = os.path.join(directory, "state")
        shutil.copytree(kept, state)
        path = writeConfiguration(directory, state, n, firstPort)
        log = os.path.join(directory, "twistd.log")
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "lets-encrypt", "--config", path],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=directory,
                env={**os.environ, "PYTHONPATH": tree},
                preexec_fn=moreFiles(n),
            )
        try:
            waitListening(log, process)
            time.sleep(pause)
            for call in range(calls):
                server = cpuSeconds(process.pid)
                wall, cpu = timeStatus(tree, path, n)
                kind = "first" if call == 0 else "later"
                result.setdefault(f"{kind} wall", []).append(wall)
                result.setdefault(f"{kind} CPU", []).append(cpu)
                result.setdefault(f"{kind} server CPU", []).append(cpuSeconds(process.pid) - server)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        for _ in range(calls):
            wall, cpu = timeStatus(tree, path, n)
            result.setdefault("alone wall", []).append(wall)
            result.setdefault("alone CPU", []).append(cpu)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=2, help="servers started per tree")
    parser.add_argument("--calls", type=int, default=3, help="status commands per server")
    parser.add_argument("--tree", action="append", help="a package tree (default: this one)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--first-port", type=int, default=51000)
    addAddressArgument(parser)
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds between in service and the first call"
    )
    parser.add_argument(
        "--no-facts",
        action="store_true",
        help="renewal states without certificate_facts, as versions before saved them",
    )
    arguments = parser.parse_args()
    trees = [os.path.abspath(tree) for tree in arguments.tree or [ROOT]]
    workdir = os.path.abspath(arguments.workdir)
    os.makedirs(workdir, exist_ok=True)
    for tree in trees:
        compilePackage(tree)
    results: dict[str, dict[str, list[float]]] = {tree: {} for tree in trees}
    loads = []
    for _ in range(arguments.repeats):
        for tree in trees:
            loads.append(os.getloadavg()[0])
            once = measureOnce(
                tree,
                workdir,
                arguments.n,
                arguments.calls,
                arguments.first_port,
                arguments.pause,
                not arguments.no_facts,
            )
            for key, values in once.items():
                results[tree].setdefault(key, []).extend(values)
    keys = list(results[trees[0]])
    print(
        f"status --json at N = {arguments.n:,}, the first call {arguments.pause:g} s after "
        f"all listen; load {min(loads):.1f}-{max(loads):.1f}"
    )
    print("median (min-max) seconds\n")
    print(f"| tree | {' | '.join(keys)} |")
    print(f"|---|{'---|' * len(keys)}")
    for tree, values in results.items():
        cells = [
            f"{statistics.median(values[k]):.2f} ({min(values[k]):.2f}-{max(values[k]):.2f})"
            for k in keys
        ]
        print(f"| {tree} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
