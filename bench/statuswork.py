"""
The running server's work for one C{status} at N sets, in process, in CPU
time: the first call (which makes the kept rows) and the later ones, and
the rows made anew and encoded by C{json.dumps} for comparison; the texts
must be the same.  Run it from the root of the tree to measure (a tree
exported before a change with C{git archive}, then this one, in turn):

    cd /tmp/before && /path/to/.venv/bin/python /path/to/bench/statuswork.py --n 10000

The sets are C{bench/warm.py}'s fabricated state (under C{--workdir}) on
C{bench/twistdscale.py}'s configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.getcwd())
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

# The package of the tree in the current folder, imported before the
# bench's helpers put this checkout on the path.
from letsencrypt_resource.host import readConfiguration  # noqa: E402, I001
from letsencrypt_resource.setloading import SetLoader, collectSets, settingsFingerprint  # noqa: E402
from letsencrypt_resource.statusreader import _Reading  # noqa: E402
from letsencrypt_resource.statusrows import NoConsumer, RowCache, statusRow  # noqa: E402
from letsencrypt_resource.storage.directory import DirectoryStorage  # noqa: E402
from letsencrypt_resource.storage.records import Records  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.logger import Logger  # noqa: E402
from twistdscale import writeConfiguration  # noqa: E402
from warm import Inline, fabricated  # noqa: E402


def cpu(work: Callable[[], Any]) -> tuple[float, Any]:
    """
    The CPU time C{work} took, and what it gave.
    """
    start = time.process_time()
    result = work()
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument(
        "--workdir",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
    )
    arguments = parser.parse_args()
    state = fabricated(os.path.abspath(arguments.workdir), arguments.n)
    with tempfile.TemporaryDirectory() as directory:
        configuration = readConfiguration(writeConfiguration(directory, state, arguments.n), ())
    options = configuration.resource
    assert options is not None
    clock = Clock()
    clock.advance(time.time())
    consumers = [(s.section, NoConsumer(s.name, s.domains)) for s in configuration.services]
    sets = list(collectSets(consumers, settingsFingerprint(options)).values())
    storage = DirectoryStorage(state, None, workers=Inline())  # type: ignore[arg-type]
    loader = SetLoader(Records(storage), _Reading(clock), clock, options.checkInterval, Logger())
    loader.loadAll(sets)
    now = clock.seconds()
    cache = RowCache()
    if hasattr(cache, "encoded"):

        def status() -> str:
            return cache.encoded(sets, options, now, True)
    else:  # a tree from before the kept texts

        def status() -> str:
            return json.dumps([cache.row(c, options, now, True) for c in sets])

    calls = [cpu(status) for _ in range(arguments.calls)]
    anew = cpu(lambda: json.dumps([statusRow(c, options, now, True) for c in sets]))
    if any(text != anew[1] for _, text in calls):
        raise RuntimeError("the status texts differ")
    print(
        f"{os.getcwd()}: N = {arguments.n:,}, load {os.getloadavg()[0]:.1f}: first call "
        f"{calls[0][0]:.3f} s, later {', '.join(f'{t:.3f}' for t, _ in calls[1:])} s, "
        f"made anew and json.dumps {anew[0]:.3f} s CPU; {len(anew[1]):,} bytes"
    )


if __name__ == "__main__":
    main()
