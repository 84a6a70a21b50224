"""
C{python -m letsencrypt_resource status --json} at N sets when no server
runs, in wall and CPU time, for each tree in turn (a tree exported before
a change with C{git archive}, and this one), so that the trees are
compared in the same minutes; no port is listened on.

    .venv/bin/python bench/statusalone.py --n 10000 --repeats 5 --tree /tmp/before --tree .
    .venv/bin/python bench/statusalone.py --n 10000 --tree /tmp/before --tree . --no-facts

It runs on C{bench/twistdscale.py}'s configuration and a copy of
C{bench/warm.py}'s fabricated state: by default its renewal states record
their certificates' facts (C{certificate_facts}), as this version saves
them; with C{--no-facts}, they do not, as versions before saved them.
Each tree is compiled to bytecode first, as installing it does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT  # noqa: E402
from statusscale import timeStatus  # noqa: E402
from twistdscale import compilePackage, writeConfiguration  # noqa: E402
from warm import fabricated  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3, help="commands per tree")
    parser.add_argument("--tree", action="append", help="a package tree (default: this one)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
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
    kept = fabricated(workdir, arguments.n, not arguments.no_facts)
    walls: dict[str, list[float]] = {tree: [] for tree in trees}
    cpus: dict[str, list[float]] = {tree: [] for tree in trees}
    loads = []
    with tempfile.TemporaryDirectory(prefix=f"alone-{arguments.n}-", dir=workdir) as directory:
        state = os.path.join(directory, "state")
        shutil.copytree(kept, state)
        path = writeConfiguration(directory, state, arguments.n)
        for _ in range(arguments.repeats):
            for tree in trees:
                loads.append(os.getloadavg()[0])
                wall, cpu = timeStatus(tree, path, arguments.n)
                walls[tree].append(wall)
                cpus[tree].append(cpu)
    print(
        f"status --json without a server at N = {arguments.n:,}, renewal states "
        f"{'without' if arguments.no_facts else 'with'} certificate_facts; "
        f"load {min(loads):.1f}-{max(loads):.1f}; median (min-max) seconds\n"
    )
    print("| tree | wall | CPU |")
    print("|---|---|---|")
    for tree in trees:
        cells = [
            f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
            for v in (walls[tree], cpus[tree])
        ]
        print(f"| {tree} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
