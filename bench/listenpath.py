"""
The listening path of N C{https} services, in one process: N
L{HTTPSFileService}s on one folder, started, then each handed a
certificate with the collector paused, as a warm start's delivery does
under twistd (the consumer's first certificate -> the service's listener
-> its port), on the real reactor of this platform (not run), listening
on N ports of C{--address} from C{--first-port}.  Prints the CPU
(C{process_time}) and the wall time of the handing, best and median of
C{--repeats} rounds; each run is a fresh process that imports the package
of its C{--tree} (by default this one), and several trees alternate, the
first tree's first.  C{--profile} prints cProfile's costliest functions
of one run of each tree, to stderr.

    .venv/bin/python bench/listenpath.py --n 10000 --repeats 7 \\
        --tree /tmp/before --tree . --address 127.0.0.12 --first-port 2100
    .venv/bin/python bench/listenpath.py --n 10000 --profile
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not this folder on the path (its profile.py would stand for the standard
# library's): each run imports the package of its tree, from PYTHONPATH.
del sys.path[0]


def once(n: int, address: str, firstPort: int, profile: bool) -> dict[str, float]:
    """
    Hand N started services a certificate, in this process: the CPU and
    wall seconds it took.
    """
    from twisted.internet import reactor
    from twisted.logger import Logger

    from letsencrypt_resource.config import ServiceOptions
    from letsencrypt_resource.https import HTTPSFileService
    from letsencrypt_resource.provisional import makeProvisional, makeSigner
    from letsencrypt_resource.sharedfolders import SharedFolders
    from letsencrypt_resource.startupreport import ListeningStartUp

    now = datetime.datetime.now(datetime.timezone.utc)
    certifiedKey = makeProvisional(makeSigner("bench", ("com",), now), ("example.com",), now)
    folder = tempfile.mkdtemp()
    folders = SharedFolders()
    startUp = ListeningStartUp(Logger(), n, reactor.seconds())
    services = []
    for i in range(n):
        options = ServiceOptions(
            section=f"s{i}",
            type="https",
            name=f"s{i}",
            description="",
            address=address,
            port=firstPort + i,
            domains=("example.com",),
            path=folder,
            debug=False,
        )
        service = HTTPSFileService(options, reactor)
        service.folders = folders
        service.startUp = startUp
        service.startService()
        services.append(service)
    # As under twistd, where delivering pauses the collector (see
    # letsencrypt_resource.startupcollection).
    gc.collect()
    gc.freeze()
    gc.disable()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
    cpu, wall = time.process_time(), time.perf_counter()
    for service in services:
        service.consumer.useCertificate(certifiedKey)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profile:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    listening = sum(1 for service in services if service._port is not None)
    assert startUp.told, "not every service listened"
    for service in services:
        service.stopService()
    shutil.rmtree(folder)
    return {"cpu": cpu, "wall": wall, "listening": listening}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--first-port", type=int, default=2100)
    parser.add_argument("--tree", action="append", default=[])
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one run of each tree (to stderr)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(once(args.n, args.address, args.first_port, args.profile)))
        return
    trees = args.tree or [ROOT]
    results: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    for _ in range(1 if args.profile else args.repeats):
        for tree in trees:
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", "letsencrypt_resource"],
                cwd=tree,
                check=True,
            )
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                "--n",
                str(args.n),
                "--address",
                args.address,
                "--first-port",
                str(args.first_port),
            ]
            output = subprocess.run(
                command + (["--profile"] if args.profile else []),
                cwd=tree,
                env=dict(os.environ, PYTHONPATH=os.path.abspath(tree)),
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            results[tree].append(json.loads(output))
    print(f"load average: {os.getloadavg()}")
    print("| tree | N | CPU best | CPU median | wall best | wall median |")
    print("|---|---|---|---|---|---|")
    for tree, runs in results.items():
        cpus = [run["cpu"] for run in runs]
        walls = [run["wall"] for run in runs]
        print(
            f"| {tree} | {args.n:,} | {min(cpus):.3f} s | {statistics.median(cpus):.3f} s "
            f"| {min(walls):.3f} s | {statistics.median(walls):.3f} s |"
        )


if __name__ == "__main__":
    main()
