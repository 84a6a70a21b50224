"""
The parts of the work before the reactor that issue 17's start-up changes
made cheaper, each timed in one process for this tree and for another
(C{--before}), alternating, so that both meet the same load: the CPU time
of each part over the N services of the configuration
C{bench/twistdscale.py} writes.

    .venv/bin/python bench/prebootparts.py --before /tmp/before --n 10000 --repeats 41
    .venv/bin/python bench/prebootparts.py --before /tmp/before --whole 8 --repeats 0

The parts: reading the INI text (C{inireader.readINI}); reading the
service sections' options (C{config._readSection}, the values parsed
shared between the sections as in C{parseConfiguration}, from none: each
service's names and port are parsed, its address and folder found);
building their options (C{config._service}, given what
C{parseConfiguration} gives it: the options each section sets, or its
text); and parsing each service's names (C{domains.parseDomainList}).
The modules of C{--before} are loaded from its files (C{inireader} and
C{domains} import nothing of the package), and its versions of
C{config}'s functions are run beside the current module's other
functions.  The best and the median of the repeats are shown, in
milliseconds, with the load; the garbage collector runs between the
parts, not within them (start-up pauses it).  With C{--whole}, the whole configuration read
(C{config.loadConfiguration}) and C{tap.makeService} are timed too, each
the best of C{--inner} runs in a fresh interpreter of each tree, the
trees alternating: steadier on a busy machine than one run a process.
"""

from __future__ import annotations

import argparse
import ast
import gc
import importlib.util
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT  # noqa: E402
from twistdscale import writeConfiguration  # noqa: E402

from letsencrypt_resource import config, domains, inireader  # noqa: E402


def loadFile(tree: str, module: ModuleType) -> ModuleType:
    """
    The module of C{tree} that C{module} is in this tree, loaded from its
    file under another name.
    """
    path = os.path.join(tree, os.path.relpath(inspect.getfile(module), ROOT))
    spec = importlib.util.spec_from_file_location(f"before_{module.__name__}", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def configFunctions(tree: str, names: set[str]) -> dict[str, Any]:
    """
    The functions C{names} of C{tree}'s C{config.py}, defined among the
    current module's other names.
    """
    with open(os.path.join(tree, "letsencrypt_resource", "config.py")) as stream:
        body = ast.parse(stream.read()).body
    chosen = [node for node in body if isinstance(node, ast.FunctionDef) and node.name in names]
    namespace = dict(vars(config))
    exec(compile(ast.Module(body=chosen, type_ignores=[]), "before config", "exec"), namespace)
    return namespace


def parts(before: str, text: str) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """
    Each part's work, as it is in C{before} and as it is here.
    """
    sections = inireader.readINI(text)
    services = [(name, read) for name, read in sections.items() if name.startswith("services/")]
    old = configFunctions(before, {"_readSection", "_service", "_listenerAddress"})
    oldServiceTakes = "written" in inspect.signature(old["_service"]).parameters
    shared: dict[Any, Any] = {}
    values = [
        (name, read, config._readSection(name, read, config.SERVICE_OPTIONS, shared))
        for name, read in services
    ]

    def readSections(readSection: Callable[..., Any]) -> Callable[[], object]:
        def read() -> object:
            parsed: dict[Any, Any] = {}
            return [readSection(n, r, config.SERVICE_OPTIONS, parsed) for n, r in services]

        return read

    def oldServices() -> object:
        given = config._written if oldServiceTakes else (lambda read: read)
        return [old["_service"](n, v, ROOT, given(r)) for n, r, v in values]

    oldINI, oldDomains = loadFile(before, inireader), loadFile(before, domains)
    names = [read["ssl_domains"] for _, read in services]
    return {
        "readINI": (lambda: oldINI.readINI(text), lambda: inireader.readINI(text)),
        "_readSection": (readSections(old["_readSection"]), readSections(config._readSection)),
        "_service": (oldServices, lambda: [config._service(n, v, ROOT, r) for n, r, v in values]),
        "parseDomainList": (
            lambda: [oldDomains.parseDomainList(n) for n in names],
            lambda: [domains.parseDomainList(n) for n in names],
        ),
    }


#: Run in a fresh interpreter, with a tree first on its path: prints the
#: best CPU time of K configuration reads and of K C{makeService} calls
#: on the configuration file named first, collector off as at start-up.
WHOLE = """
import gc, json, os, sys, time
gc.disable()
from letsencrypt_resource import config, tap
path, k = sys.argv[1], int(sys.argv[2])
def best(work):
    times = []
    for _ in range(k):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return min(times)
options = tap.Options()
options.parseOptions(["--config", path])
read = best(lambda: config.loadConfiguration(path))
print(json.dumps([read, best(lambda: tap.makeService(options))]))
os._exit(0)
"""


def whole(trees: list[str], directory: str, n: int, rounds: int, inner: int) -> None:
    """
    Print the best and median, over C{rounds} fresh interpreters for each
    tree (alternating), of the best of C{inner} configuration reads and
    C{makeService} calls of N services in each.
    """
    state = os.path.join(directory, "state")
    path = writeConfiguration(directory, state, n)
    results: dict[str, list[list[float]]] = {tree: [] for tree in trees}
    for _ in range(rounds):
        for index, tree in enumerate(trees):
            shutil.rmtree(state, ignore_errors=True)
            os.mkdir(state, 0o700)
            env = {**os.environ, "PYTHONPATH": tree}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(directory, f"pycache-{index}")
            output = subprocess.run(
                [sys.executable, "-c", WHOLE, path, str(inner)],
                check=True,
                capture_output=True,
                cwd=tree,
                env=env,
            ).stdout
            results[tree].append(json.loads(output.splitlines()[-1]))
    print(f"\n| tree, {n:,} services | loadConfiguration: best / median | makeService: ditto |")
    print("|---|---|---|")
    for tree, runs in results.items():
        columns = [[run[i] for run in runs] for i in (0, 1)]
        cells = [f"{1000 * min(c):.1f} / {1000 * statistics.median(c):.1f} ms" for c in columns]
        print(f"| {tree} | {cells[0]} | {cells[1]} |")
    print(f"\nbest of {inner} in each of {rounds} interpreters; load: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the tree to compare with")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument(
        "--whole",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also time the whole configuration read and makeService, in ROUNDS "
        "fresh interpreters for each tree",
    )
    parser.add_argument("--inner", type=int, default=3, help="runs of each in an interpreter")
    arguments = parser.parse_args()
    before = os.path.abspath(arguments.before)
    with tempfile.TemporaryDirectory(prefix="prebootparts-") as directory:
        with open(
            writeConfiguration(directory, os.path.join(directory, "state"), arguments.n)
        ) as f:
            text = f.read()
        if arguments.whole:
            whole([before, ROOT], directory, arguments.n, arguments.whole, arguments.inner)
    if arguments.repeats:
        timeParts(parts(before, text), arguments.n, arguments.repeats)


def timeParts(
    work: dict[str, tuple[Callable[[], object], Callable[[], object]]], n: int, repeats: int
) -> None:
    """
    Print the best and median CPU time of each part's two versions over
    C{repeats} runs of each, alternating.
    """
    times: dict[tuple[str, int], list[float]] = {}
    # As at start-up, where automatic collection pauses until the server
    # started: no part pays for collecting what another left.
    gc.disable()
    for _ in range(repeats):
        for name, pair in work.items():
            for which, run in enumerate(pair):
                gc.collect()
                started = time.process_time()
                run()
                times.setdefault((name, which), []).append(time.process_time() - started)
    print(f"| part, {n:,} services | before: best / median | after: best / median |")
    print("|---|---|---|")
    for name in work:
        cells = [
            f"{1000 * min(times[name, w]):.1f} / {1000 * statistics.median(times[name, w]):.1f} ms"
            for w in (0, 1)
        ]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"\nCPU, {repeats} repeats alternating; load: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
