"""
What taking back N stored certificates costs, in CPU time, in one process,
alternating in the same minutes: read with the facts their renewal states
record (C{certificate_facts}: the certificate is not parsed), and read as
a state without them makes the start-up and the status read them (the
certificate parsed); each then asked for what the start-up and the status
ask of it (its end of validity, validity, issuer).  The renewal states'
JSON parse is timed alone after.

    .venv/bin/python bench/storedsets.py --n 10000 --repeats 8

The sets are C{bench/warm.py}'s fabricated state (under C{--workdir}),
read once from the files before the timing; the collector is off, as it
is while the start-up loads its sets.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT, names  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from warm import RUN, Inline, fabricated  # noqa: E402

from letsencrypt_resource.renewalstate import storedRecord  # noqa: E402
from letsencrypt_resource.storage.directory import DirectoryStorage  # noqa: E402
from letsencrypt_resource.storage.records import Records, StoredSet  # noqa: E402


def takeBack(stored: list[StoredSet], states: list[Any], facts: bool) -> float:
    """
    The CPU seconds of reading every certificate of C{stored}, with the
    recorded facts of C{states} or not, and asking for what the start-up
    and the status read of it.
    """
    start = time.process_time()
    for records, state in zip(stored, states, strict=True):
        digest, recorded = storedRecord(state)
        certifiedKey = records.certifiedKey(digest, recorded if facts else None)
        assert certifiedKey is not None
        certifiedKey.notAfter.timestamp()
        _ = (certifiedKey.validity, certifiedKey.issuerText)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
    arguments = parser.parse_args()
    state = fabricated(os.path.abspath(arguments.workdir), arguments.n)
    records = Records(DirectoryStorage(state, None, workers=Inline()))  # type: ignore[arg-type]
    sets = [(name,) for name in names(arguments.n, RUN)]
    loaded: Deferred[list[StoredSet]] = records.loadSets(sets)
    stored: list[StoredSet] = []
    loaded.addCallback(stored.extend)
    states = [each.renewalState() for each in stored]
    gc.disable()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(arguments.repeats):
        for facts in (False, True):
            times[facts].append(takeBack(stored, states, facts))
    start = time.process_time()
    for each in stored:
        each.renewalState()
    parse = time.process_time() - start
    print(f"N = {arguments.n:,}, load {os.getloadavg()[0]:.1f}; CPU seconds, median (min-max)")
    for facts, label in ((False, "parsed (no facts)"), (True, "with facts")):
        values = times[facts]
        print(f"  {label}: {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
    print(f"  renewal states' JSON parse (StoredSet.renewalState), once: {parse:.3f}")


if __name__ == "__main__":
    main()
