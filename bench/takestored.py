"""
What reading and taking back N stored sets costs at start-up, in CPU
time, in one process per run, trees alternating in the same minutes:
C{Records.loadSets} over the state directory (the storage's reader work,
run inline, and the keys made on the way), then C{SetLoader.takeStored}
of every set through the real L{StoredChanges} and L{Provisioning}, to
consumers that keep the certificate and do nothing with it (no TLS
context, no listening: those are C{bench/afterreactor.py}'s).

    .venv/bin/python bench/takestored.py --n 10000 --repeats 5 --tree /tmp/before --tree .

The sets are C{bench/warm.py}'s fabricated state (under C{--workdir});
the collector is off while they are taken back, as at start-up.  Each
run prints the best of C{--inner} passes; the table has the median of
the runs of each tree.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT  # noqa: E402


def child(state: str, passes: int, count: int | None) -> dict[str, float]:
    """
    In a process whose package is the tree's (its working folder): the
    best CPU seconds of
    C{passes} reads and take-backs of the sets of C{state} (the first
    C{count} of them, if given).
    """
    from twisted.internet.task import Clock
    from twisted.logger import Logger
    from warm import Inline, benchOptions

    import letsencrypt_resource
    from letsencrypt_resource.managed import ManagedCertificate
    from letsencrypt_resource.provisioning import Provisioning
    from letsencrypt_resource.setloading import SetLoader, settingsFingerprint
    from letsencrypt_resource.storage.directory import DirectoryStorage
    from letsencrypt_resource.storage.records import Records
    from letsencrypt_resource.storedchanges import StoredChanges

    domains = [(name[: -len(".json")],) for name in sorted(os.listdir(f"{state}/renewal"))]
    domains = domains[:count]
    assert letsencrypt_resource.__file__.startswith(os.getcwd() + os.sep)
    options = benchOptions(state)
    records = Records(DirectoryStorage(state, None, workers=Inline()))  # type: ignore[arg-type]
    clock = Clock()
    clock.advance(time.time())

    class Consumer:
        def __init__(self) -> None:
            self.got: Any = None

        def useCertificate(self, certificate: Any) -> None:
            self.got = certificate

    read, taken = [], []
    for _ in range(passes):
        stored: list[Any] = []
        gc.collect()
        gc.disable()
        start = time.process_time()
        for at in range(0, len(domains), 64):
            records.loadSets(domains[at : at + 64]).addCallback(stored.extend)
        read.append(time.process_time() - start)
        gc.enable()
        sets = [ManagedCertificate(d, settingsFingerprint(options)) for d in domains]
        for certificate in sets:
            certificate.consumers.append(Consumer())  # type: ignore[arg-type]
        managed = {frozenset(c.domains): c for c in sets}
        provisioning = Provisioning(options, managed, None, None, None, clock, Logger())  # type: ignore[arg-type]
        taker = StoredChanges(options, records, managed, provisioning, clock, Logger())
        loader = SetLoader(records, taker, clock, options.checkInterval, Logger())
        gc.collect()
        gc.disable()
        start = time.process_time()
        for certificate, records_ in zip(sets, stored, strict=True):
            loader.takeStored(certificate, records_)
        taken.append(time.process_time() - start)
        gc.enable()
        assert all(c.consumers[0].got is not None for c in sets)  # type: ignore[attr-defined]
    return {"read": min(read), "take": min(taken)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tree")
    parser.add_argument("--inner", type=int, default=3, help="passes in each run (best kept)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".bench-work"))
    parser.add_argument("--tree", action="append", help="a source tree of the package")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sets", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        # The tree measured is the one given (the working folder), not
        # the tree of this script, which common.py puts first.
        sys.path.insert(0, os.getcwd())
        print(json.dumps(child(arguments.child, arguments.inner, arguments.sets)))
        return
    from warm import fabricated

    state = fabricated(arguments.workdir, arguments.n)
    trees = [os.path.abspath(t) for t in arguments.tree or [ROOT]]
    for tree in trees:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", os.path.join(tree, "letsencrypt_resource")],
            check=True,
        )
    runs: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    for _ in range(arguments.repeats):
        for tree in trees:
            command = [sys.executable, os.path.abspath(__file__), "--child", state]
            command += ["--inner", str(arguments.inner)]
            output = subprocess.run(
                command,
                check=True,
                capture_output=True,
                cwd=tree,
                env={**os.environ, "PYTHONPATH": tree},
            ).stdout
            runs[tree].append(json.loads(output))
    print(
        f"| tree | N | loadSets CPU | takeStored CPU | together |  ({os.getloadavg()[0]:.2f} load)"
    )
    print("|---|---|---|---|---|")
    for tree, results in runs.items():
        read = statistics.median(r["read"] for r in results)
        take = statistics.median(r["take"] for r in results)
        print(f"| {tree} | {arguments.n:,} | {read:.3f} s | {take:.3f} s | {read + take:.3f} s |")


if __name__ == "__main__":
    main()
