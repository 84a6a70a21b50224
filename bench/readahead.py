"""
Where the state directory's read-ahead process starts to pay: N sets'
records (two files each, of the sizes a start-up reads) loaded by batches
of 64 sets, as the set loader loads them, with the reactor thread's work
on each batch stood in for by a busy loop of C{--work-ms}, with read-ahead
and without, alternated in fresh processes.

    .venv/bin/python bench/readahead.py --n 1000 2000 5000 10000 --repeats 5

Each row gives the median wall time from the plan to the last batch and
the median CPU of the loading process (its threads; the read-ahead
process's own CPU is another core's), with and without.  The files are
made once under C{--workdir}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

#: The sizes of a set's renewal state and certificate file at a start-up.
SIZES = (1100, 1300)


def makeState(path: str, n: int) -> None:
    """
    The state directory of C{n} sets at C{path}, made once.
    """
    done = os.path.join(path, f".made-{n}")
    if os.path.exists(done):
        return
    for folder in ("", "renewal", "certificates"):
        os.makedirs(os.path.join(path, folder), 0o700, exist_ok=True)
        os.chmod(os.path.join(path, folder), 0o700)
    for i in range(n):
        for key, size in zip(keysOf(i), SIZES, strict=True):
            with open(os.path.join(path, key), "wb") as f:
                f.write(os.urandom(size // 2).hex().encode("ascii"))
    open(done, "w").close()


def keysOf(i: int) -> tuple[str, str]:
    """
    The keys of set number C{i}.
    """
    return (f"renewal/s{i}.example.json", f"certificates/s{i}.example.pem")


def measure(path: str, n: int, ahead: bool, work: float) -> tuple[float, float]:
    """
    In this process: the wall time and CPU of loading the C{n} sets, with
    the package of this checkout.
    """
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from letsencrypt_resource.storage import directory
    from letsencrypt_resource.storage.directory import DirectoryStorage

    directory.READ_AHEAD_MIN = 0 if ahead else 10**9
    keys = [key for i in range(n) for key in keysOf(i)]
    result: list[float] = []

    async def load() -> None:
        storage = DirectoryStorage(path, reactor, readAhead=True)
        started, cpu = time.perf_counter(), time.process_time()
        storage.planReads(keys)
        for start in range(0, len(keys), 128):
            values = await storage.loadMany(keys[start : start + 128])
            assert all(isinstance(v, bytes) for v in values.values())
            end = time.process_time() + work
            while time.process_time() < end:
                pass
        result.extend([time.perf_counter() - started, time.process_time() - cpu])
        await storage.close()

    def run() -> None:
        Deferred.fromCoroutine(load()).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work-ms", type=float, default=10.0, help="reactor work per batch")
    parser.add_argument("--workdir", default="/tmp/readahead-bench")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        n, ahead = int(options.one[1]), options.one[2] == "1"
        wall, cpu = measure(options.one[0], n, ahead, options.work_ms / 1000)
        print(wall, cpu)
        return
    print("| N | wall without | wall with | CPU without | CPU with |")
    print("|---|---|---|---|---|")
    for n in options.n:
        path = os.path.join(options.workdir, str(n))
        makeState(path, n)
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(options.repeats):
            for ahead in (False, True):
                line = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--work-ms",
                        str(options.work_ms),
                        "--one",
                        path,
                        str(n),
                        str(int(ahead)),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                runs[ahead].append((float(line[0]), float(line[1])))
        wall = {a: statistics.median(r[0] for r in runs[a]) for a in runs}
        cpu = {a: statistics.median(r[1] for r in runs[a]) for a in runs}
        print(
            f"| {n:,} | {wall[False]:.3f} s | {wall[True]:.3f} s "
            f"| {cpu[False]:.3f} s | {cpu[True]:.3f} s |"
        )


if __name__ == "__main__":
    main()
