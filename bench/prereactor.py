"""
What C{twistd lets-encrypt} does before its reactor runs, phase by phase:
the CPU time of each, and of the garbage collector within it, in a fresh
interpreter on a generated configuration of N C{https} services (the one
C{bench/twistdscale.py} writes, on an empty state directory), at each N.

    .venv/bin/python bench/prereactor.py --n 1000 3000 10000 --repeats 3
    .venv/bin/python bench/prereactor.py --n 10000 --repeats 5 --trees . /tmp/before

The phases are those twistd goes through: the interpreter's start,
twistd's own imports, importing the plugin's module
(C{letsencrypt_resource.tap}), C{Options.parseOptions} (reading and
checking the configuration), C{makeService}, and starting the services
(C{privilegedStartService}, C{startService}; the reactor does not run).
With C{--trees}, each tree is measured in turn at each repeat (before and
after alternating, in the same minutes); the best of the repeats is shown,
the least disturbed by other work on the machine.  With C{--bytecode},
each tree's modules are compiled once first (into a cache under
C{--workdir}), as an installed package's are: otherwise, with
C{PYTHONDONTWRITEBYTECODE} set, every start compiles every module again.
With C{--plugin}, the package is imported as twistd imports it: through
the tree's twistd plugin (C{twisted/plugins/letsencrypt_resource_plugin.py},
loaded from the tree, not from an installed copy), whose options the
phase "import tap" then includes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT  # noqa: E402
from twistdscale import addAddressArgument, moreFiles, writeConfiguration  # noqa: E402

#: The phases, in order.
PHASES = ("interpreter", "twistd", "import tap", "parseOptions", "makeService", "startService")

#: Run in the fresh interpreter, with the tree first on its path: prints
#: the CPU seconds at the end of each phase and of the collections so far.
CHILD = """
import gc, json, os, sys, time
marks = [(time.process_time(), 0.0)]
spent, began = [0.0], [0.0]
def watch(phase, info):
    if phase == "start":
        began[0] = time.process_time()
    else:
        spent[0] += time.process_time() - began[0]
gc.callbacks.append(watch)
def mark():
    marks.append((time.process_time(), spent[0]))
import twisted.scripts.twistd, twisted.application.app
mark()
if sys.argv[2:] == ["plugin"]:
    # As twistd: the tree's plugin gives the options, importing the tap.
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "bench_plugin", os.path.join("twisted", "plugins", "letsencrypt_resource_plugin.py")
    )
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    options = plugin.letsEncrypt.options()
    from letsencrypt_resource import tap
else:
    from letsencrypt_resource import tap
    options = tap.Options()
mark()
options.parseOptions(["--config", sys.argv[1]])
mark()
server = tap.makeService(options)
mark()
server.privilegedStartService()
server.startService()
mark()
print(json.dumps(marks), flush=True)
os._exit(0)
"""


def measureOnce(
    tree: str, path: str, state: str, n: int, cache: str | None, plugin: bool = False
) -> list[tuple[float, float]]:
    """
    The CPU and collector seconds of each phase, in one fresh interpreter
    running the package of C{tree} on the configuration C{path}, whose
    state directory C{state} is emptied first.

    @param cache: Where compiled modules are kept, or C{None} to compile
        none (with C{PYTHONDONTWRITEBYTECODE} set, as here).
    @param plugin: Whether the tap is imported as twistd imports it, through
        the tree's twistd plugin (C{twisted/plugins}).
    """
    shutil.rmtree(state, ignore_errors=True)
    os.mkdir(state, 0o700)
    env = {**os.environ, "PYTHONPATH": tree}
    if cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
    output = subprocess.run(
        [sys.executable, "-c", CHILD, path, *(["plugin"] if plugin else [])],
        check=True,
        capture_output=True,
        cwd=tree,
        env=env,
        preexec_fn=moreFiles(n),
    ).stdout
    marks = json.loads(output.splitlines()[-1])
    phases = [(marks[0][0], 0.0)]
    for (before, gcBefore), (after, gcAfter) in zip(marks, marks[1:], strict=False):
        phases.append((after - before, gcAfter - gcBefore))
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trees", nargs="+", default=[ROOT], help="checkouts to compare")
    parser.add_argument("--first-port", type=int, default=21000)
    addAddressArgument(parser)
    parser.add_argument("--bytecode", action="store_true", help="compile the modules once first")
    parser.add_argument(
        "--median",
        action="store_true",
        help="also show the median of each phase over the repeats",
    )
    parser.add_argument(
        "--plugin",
        action="store_true",
        help="import the tap through each tree's twistd plugin, as twistd does",
    )
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
    arguments = parser.parse_args()
    trees = [os.path.abspath(tree) for tree in arguments.trees]
    os.makedirs(arguments.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prereactor-", dir=arguments.workdir) as directory:
        caches: dict[str, str | None] = dict.fromkeys(trees)
        if arguments.bytecode:
            caches = {tree: os.path.join(directory, f"pycache-{i}") for i, tree in enumerate(trees)}
        print("| N | tree | " + " | ".join(PHASES) + " | total | of which collector |")
        print("|---|---|" + "---|" * (len(PHASES) + 2))
        for n in sorted(arguments.n):
            state = os.path.join(directory, f"state-{n}")
            path = writeConfiguration(directory, state, n, arguments.first_port)
            if arguments.bytecode:
                for tree in trees:
                    measureOnce(tree, path, state, n, caches[tree], arguments.plugin)
            runs: dict[str, list[list[tuple[float, float]]]] = {tree: [] for tree in trees}
            for _ in range(arguments.repeats):
                for tree in trees:
                    runs[tree].append(
                        measureOnce(tree, path, state, n, caches[tree], arguments.plugin)
                    )
            for tree in trees:
                best = min(runs[tree], key=lambda phases: sum(p[0] for p in phases))
                cells = " | ".join(f"{cpu:.3f}" for cpu, _ in best)
                total = sum(cpu for cpu, _ in best)
                collector = sum(gc for _, gc in best)
                print(f"| {n:,} | {tree} | {cells} | {total:.3f} s | {collector:.3f} s |")
            if arguments.median:
                for tree in trees:
                    print(f"| {n:,} | {tree} (median) | {medianRow(runs[tree])} |")
    print(f"\nCPU seconds, best of {arguments.repeats}; load: {os.getloadavg()[0]:.2f}")


def medianRow(runs: list[list[tuple[float, float]]]) -> str:
    """
    The cells of the median of each phase, of the total and of the
    collector over C{runs}: on a busy machine, steadier than the best run.
    """
    columns = [[phases[i][0] for phases in runs] for i in range(len(PHASES))]
    cells = [f"{statistics.median(column):.3f}" for column in columns]
    total = statistics.median(sum(cpu for cpu, _ in phases) for phases in runs)
    collector = statistics.median(sum(gc for _, gc in phases) for phases in runs)
    return " | ".join(cells) + f" | {total:.3f} s | {collector:.3f} s"


if __name__ == "__main__":
    main()
