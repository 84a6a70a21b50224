"""
The slow reliability runs, in one command:

    .venv/bin/python bench/reliability.py

  - crash consistency: twistd killed with SIGKILL 50 times during start,
    issuance, renewal, writes and idle time, restarted each time
    (bench/reliability_crash.py);
  - the challenge site fuzzed with 100,000 raw requests under hypothesis
    (bench/reliability_fuzz.py);
  - faults against pebble repeated at random moments: nonce rejection at
    50%, the CA unreachable in the middle of orders, the CA never
    answering (real time-outs), the CA restarted in the middle of orders,
    and the store directory on a full and on a read-only file system
    (bench/reliability_faults.py).

It prints a table (fault, runs, passed, data lost) and the failures, and
exits non-zero when a run failed.  Options shorten it (--crash-runs,
--fuzz-requests, --only); pebble must be installed (./dev test does it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from bench.reliability_common import Row

SCENARIOS = ("crash", "fuzz", "faults")


def table(rows: list[Row], elapsed: float) -> str:
    lines = ["", "| fault | runs | passed | data lost | notes |", "|---|---:|---:|---:|---|"]
    for row in rows:
        notes = "; ".join(row.notes).replace("|", "/")
        lines.append(f"| {row.fault} | {row.runs} | {row.passed} | {row.dataLost} | {notes} |")
    lines += ["", f"Total time: {elapsed / 60:.1f} minutes."]
    failures = [(row.fault, f) for row in rows for f in row.failures]
    if failures:
        lines += ["", "Failures:"]
        lines += [f"  - {fault}: {failure}" for fault, failure in failures[:200]]
    return "\n".join(lines) + "\n"


async def main(reactor: Any, arguments: argparse.Namespace) -> int:
    directory = tempfile.mkdtemp(prefix="reliability-", dir=arguments.directory)
    print(f"Working in {directory}; events in {directory}/events.log", flush=True)
    logFile = open(os.path.join(directory, "events.log"), "a")
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(logFile)], redirectStandardIO=False
    )
    started = time.monotonic()
    rows: list[Row] = []
    only = set(arguments.only or SCENARIOS)
    if "fuzz" in only:
        from bench.reliability_fuzz import fuzzChallengeSite

        print(f"Fuzzing the challenge site with {arguments.fuzz_requests} requests...", flush=True)
        rows.extend(await fuzzChallengeSite(arguments.fuzz_requests, arguments.seed))
    if "faults" in only:
        from bench.reliability_faults import repeatedFaults

        print("Repeating faults against pebble...", flush=True)
        rows.extend(await repeatedFaults(reactor, os.path.join(directory, "faults"), arguments.seed))
    if "crash" in only:
        from bench.reliability_crash import crashConsistency

        print(f"Killing twistd {arguments.crash_runs} times...", flush=True)
        rows.extend(
            await crashConsistency(
                reactor, os.path.join(directory, "crash"), arguments.crash_runs, arguments.seed
            )
        )
    text = table(rows, time.monotonic() - started)
    print(text)
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, time.strftime("reliability-%Y%m%d-%H%M%S.md"))
    with open(path, "w") as stream:
        stream.write(text)
    print(f"Written to {path}")
    return 0 if all(row.ok for row in rows) else 1


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--crash-runs", type=int, default=50)
    parser.add_argument("--fuzz-requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--only", action="append", choices=SCENARIOS)
    parser.add_argument("--directory", default=None, help="where to work (default: /tmp)")
    arguments = parser.parse_args()

    def go(reactor: Any) -> Deferred[None]:
        async def inner() -> None:
            status = await main(reactor, arguments)
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(inner())

    react(go)


if __name__ == "__main__":
    run()
