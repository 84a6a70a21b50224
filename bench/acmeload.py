"""
What loading the modules that speak ACME costs the reactor: in a fresh
interpreter that imported what C{twistd lets-encrypt} imports at start-up
(C{letsencrypt_resource.tap}, which imports no C{acme}), the reactor runs
with L{probe.StallProbe} while the modules are loaded, either off the
reactor thread as the server does (L{letsencrypt_resource.acmeloading.loadACME}
in a worker thread: C{thread}) or by a plain import in the reactor thread
(C{inline}, what a lazy import at the first order would do).  Prints the
CPU the load took, its wall time and the reactor's longest stall, each
way, alternating, at each repeat.

    .venv/bin/python bench/acmeload.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT  # noqa: E402

#: Run in the fresh interpreter: the bench folder and the tree on its path.
CHILD = """
import json, sys, time
import letsencrypt_resource.tap
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from probe import StallProbe
from letsencrypt_resource.acmeloading import ACME_MODULES, loadACME
assert not any(name in sys.modules for name in ACME_MODULES)
probe = StallProbe(reactor)
result = {}

def load():
    began, cpu = time.perf_counter(), time.process_time()
    if sys.argv[1] == "thread":
        loading = loadACME(deferToThread)
    else:
        from letsencrypt_resource import accountcommands, issuer
        from twisted.internet.defer import succeed
        loading = succeed(None)
    def done(_):
        result["wall_s"] = time.perf_counter() - began
        result["cpu_s"] = time.process_time() - cpu
        reactor.callLater(0.05, reactor.stop)
    loading.addCallback(done)

probe.start()
reactor.callLater(0.05, load)
reactor.run()
probe.stop()
result["max_stall_ms"] = probe.report()["max_stall_ms"]
print(json.dumps(result), flush=True)
"""


def measure(way: str) -> dict[str, float]:
    """
    One fresh interpreter loading the ACME modules C{way}.
    """
    bench = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, bench])}
    output = subprocess.run(
        [sys.executable, "-c", CHILD, way], check=True, capture_output=True, env=env
    ).stdout
    return json.loads(output.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "letsencrypt_resource")],
        check=True,
    )
    print("| repeat | way | CPU | wall | reactor's longest stall |")
    print("|---|---|---|---|---|")
    for repeat in range(arguments.repeats):
        for way in ("thread", "inline"):
            result = measure(way)
            print(
                f"| {repeat + 1} | {way} | {result['cpu_s']:.3f} s | {result['wall_s']:.3f} s "
                f"| {result['max_stall_ms']:.1f} ms |",
                flush=True,
            )
    print(f"\nload: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
