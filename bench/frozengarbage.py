"""
How much garbage in cycles C{twistd lets-encrypt} freezes for good when
its services start (L{letsencrypt_resource.startupcollection.ResumeCollection}
freezes without collecting first): in a fresh interpreter that goes
through twistd's steps before the reactor runs (the tree's plugin makes
the options, which are parsed, then C{makeService}, C{startService}) on
the configuration C{bench/twistdscale.py} writes, the first C{gc.freeze}
is preceded by a collection that keeps what it finds (C{gc.DEBUG_SAVEALL}):
its count and shallow size (C{sys.getsizeof}) are printed, per tree and N.
With C{--twistd}, real C{twistd -n} runs instead (its own garbage
included), with the tree's plugin.

    .venv/bin/python bench/frozengarbage.py --n 1000 10000 --trees . /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT  # noqa: E402
from twistdscale import addAddressArgument, moreFiles, writeConfiguration  # noqa: E402

#: Run first in the fresh interpreter: makes the first freeze print the
#: garbage found before it, as JSON, and end the process.
COUNTED = """
import gc, json, os, sys
def counted():
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found = list(gc.garbage)
    os.write(1, json.dumps([len(found), sum(sys.getsizeof(o) for o in found)]).encode() + b"\\n")
    os._exit(0)
gc.freeze = counted
"""

#: Then, in the tree: twistd's steps.
CHILD = """
import importlib.util
import twisted.scripts.twistd, twisted.application.app
spec = importlib.util.spec_from_file_location(
    "bench_plugin", os.path.join("twisted", "plugins", "letsencrypt_resource_plugin.py")
)
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
options = plugin.letsEncrypt.options()
options.parseOptions(["--config", sys.argv[1]])
from letsencrypt_resource import tap
server = tap.makeService(options)
server.privilegedStartService()
server.startService()
"""

#: Or real twistd (C{-n}), with the tree's plugin first on its path (an
#: installed copy would come first otherwise).
TWISTD = """
import twisted.plugins
twisted.plugins.__path__.insert(0, os.path.join(os.getcwd(), "twisted", "plugins"))
config = sys.argv[1]
sys.argv = ["twistd", "-n", "--pidfile=", "--logfile=/dev/null", "lets-encrypt"]
sys.argv += ["--config", config]
from twisted.scripts.twistd import run
run()
"""


def garbage(tree: str, path: str, state: str, n: int, twistd: bool) -> tuple[int, int]:
    """
    The count and shallow bytes of the garbage that the first freeze of
    the package of C{tree} would keep, on the configuration C{path} whose
    state directory C{state} is emptied first; under real twistd if
    C{twistd}.
    """
    shutil.rmtree(state, ignore_errors=True)
    os.mkdir(state, 0o700)
    output = subprocess.run(
        [sys.executable, "-c", COUNTED + (TWISTD if twistd else CHILD), path],
        check=True,
        capture_output=True,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": tree},
        preexec_fn=moreFiles(n),
    ).stdout
    count, size = json.loads(output.splitlines()[-1])
    return count, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--trees", nargs="+", default=[ROOT], help="checkouts to compare")
    parser.add_argument("--first-port", type=int, default=21000)
    addAddressArgument(parser)
    parser.add_argument("--twistd", action="store_true", help="run real twistd -n")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
    arguments = parser.parse_args()
    os.makedirs(arguments.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="frozen-", dir=arguments.workdir) as directory:
        print("| N | tree | objects | bytes |")
        print("|---|---|---|---|")
        for n in sorted(arguments.n):
            state = os.path.join(directory, f"state-{n}")
            path = writeConfiguration(directory, state, n, arguments.first_port)
            for tree in arguments.trees:
                count, size = garbage(os.path.abspath(tree), path, state, n, arguments.twistd)
                print(f"| {n:,} | {tree} | {count:,} | {size:,} |")


if __name__ == "__main__":
    main()
