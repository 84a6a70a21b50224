"""
The part of twistd's start-up after its reactor runs: from twistd's
"reactor class" line until events 20208 and 20209, on N https services
(the configuration and state of C{bench/twistdscale.py}), with the CPU of
twistd's main thread and of its other threads (the storage's readers)
in that time, their context switches (each a turn of the interpreter
handed between them), and what events 20208 and 20209 say.

    .venv/bin/python bench/afterreactor.py --n 1000 10000 --repeats 2 [--cold]
    .venv/bin/python bench/afterreactor.py --n 10000 --tree /tmp/before --tree .

With several C{--tree}s (source trees of the package, such as one
exported from an earlier commit with C{git archive}), their runs
alternate, the first tree's first.

The CPU and the switches are read from C{/proc}; on a machine shared
with other work, they are steadier than the wall times.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT  # noqa: E402
from twistdscale import addAddressArgument, spawn, stateFor, stop, writeConfiguration  # noqa: E402

#: The most seconds one start may take.
TIMEOUT = 300.0
#: The ports of the services start here (below the ephemeral range, where
#: another program's outgoing connection may hold a port of the range).
FIRST_PORT = 2100


#: What event 20209 says when every service listens: none cannot, none
#: waits for a certificate (versions before the waiting count waited for
#: every service, and said nothing of it).
NONE_CANNOT, NONE_WAIT = ", 0 cannot,", ", 0 wait for a certificate,"
WAIT = "wait for a certificate"


def allListen(line: str) -> bool:
    """
    Whether the log line of event 20209 C{line} says that every service
    listens.
    """
    return NONE_CANNOT in line and (NONE_WAIT in line or WAIT not in line)


def threads(pid: int) -> dict[str, tuple[float, int]]:
    """
    The CPU seconds and context switches of each thread of C{pid}.
    """
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                switches = sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found[tid] = (cpu, switches)
    return found


def startOnce(workdir: str, n: int, cold: bool, firstPort: int, tree: str) -> dict[str, float]:
    """
    Start twistd on N services once, with the package of the source tree
    C{tree}; measure from its "reactor class" line until it logged events
    20208 and 20209.
    """
    with tempfile.TemporaryDirectory(prefix=f"after-{n}-", dir=workdir) as directory:
        state = stateFor(workdir, directory, n, cold)
        path = writeConfiguration(directory, state, n, firstPort)
        process = spawn(directory, path, n, tree)
        start = time.perf_counter()
        try:
            return _watch(process, start)
        finally:
            stop(process)


def _watch(process: subprocess.Popen[bytes], start: float) -> dict[str, float]:
    """
    Read twistd's log until events 20208 and 20209; the measures.
    """
    assert process.stdout is not None
    pid = process.pid
    before: dict[str, tuple[float, int]] = {}
    reactorAt = 0.0
    said: dict[str, float] = {}
    buffer = b""
    while len(said) < 2:
        if time.perf_counter() - start > TIMEOUT:
            raise RuntimeError("twistd timed out")
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(process.stdout.fileno(), 1 << 16)
        if not chunk:
            raise RuntimeError("twistd exited")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if "reactor class" in line and not before:
                before = threads(pid)
                reactorAt = time.perf_counter()
            for event in ("20208", "20209"):
                if f"] {event} " in line:
                    if event == "20209" and not allListen(line):
                        raise RuntimeError(line)
                    found = re.search(r"in ([0-9.]+) seconds|([0-9.]+) seconds after", line)
                    assert found is not None
                    said[event] = float(found.group(1) or found.group(2))
    wall = time.perf_counter() - reactorAt
    after = threads(pid)
    main = str(pid)

    def delta(tid: str, index: int) -> float:
        return after[tid][index] - before.get(tid, (0.0, 0))[index]

    others = [tid for tid in after if tid != main]
    return {
        "wall": wall,
        "main_cpu": delta(main, 0),
        "main_switches": delta(main, 1),
        "other_cpu": sum(delta(tid, 0) for tid in others),
        "other_switches": sum(delta(tid, 1) for tid in others),
        "said_20208": said["20208"],
        "said_20209": said["20209"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--cold", action="store_true", help="start on an empty state directory")
    parser.add_argument("--first-port", type=int, default=FIRST_PORT)
    addAddressArgument(parser)
    parser.add_argument(
        "--tree", action="append", help="a source tree of the package (default: this one)"
    )
    arguments = parser.parse_args()
    arguments.workdir = os.path.abspath(arguments.workdir)
    os.makedirs(arguments.workdir, exist_ok=True)
    trees = arguments.tree or [ROOT]
    print(
        "| tree | N | wall after the reactor line | main thread CPU | its switches "
        "| other threads CPU | their switches | 20208 says | 20209 says |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sorted(arguments.n):
        runs: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
        for _ in range(arguments.repeats):
            for tree in trees:
                runs[tree].append(
                    startOnce(arguments.workdir, n, arguments.cold, arguments.first_port, tree)
                )
        for tree in trees:
            _row(tree, n, runs[tree])


def _row(tree: str, n: int, runs: list[dict[str, float]]) -> None:
    """
    Print the medians of C{runs}, of C{tree} at C{n} services.
    """
    row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(
        f"| {tree} | {n:,} | {row['wall']:.2f} s | {row['main_cpu']:.2f} s "
        f"| {row['main_switches']:.0f} | {row['other_cpu']:.2f} s "
        f"| {row['other_switches']:.0f} | {row['said_20208']:.2f} s "
        f"| {row['said_20209']:.2f} s |"
    )


if __name__ == "__main__":
    main()
