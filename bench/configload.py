"""
Reading the configuration of N services: the CPU time of
L{loadConfiguration} on a generated file of N C{https} services, each on
its own port of 127.0.0.1 with one name, at each N given; the cost per
service and the slope between consecutive N (the cost of one more
service), so that growth faster than linear shows.

    .venv/bin/python bench/configload.py --n 1000 3000 10000 --repeats 3

Nothing listens: the ports are only written.  Each N is timed in this
process, best of C{--repeats} (the least disturbed by other work on the
machine), by C{time.process_time}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESOURCE_SECTION, SERVICE_SECTION, accountOptions  # noqa: E402

from letsencrypt_resource.config import loadConfiguration  # noqa: E402

#: The first port the generated services use.
FIRST_PORT = 20000


def writeConfiguration(directory: str, n: int) -> str:
    """
    Write a configuration of a resource and C{n} https services to
    C{directory}; return its path.
    """
    public = os.path.join(directory, "public")
    os.makedirs(public, exist_ok=True)
    parts = [
        RESOURCE_SECTION.format(
            challengePort=FIRST_PORT - 1,
            directoryURL="https://127.0.0.1:14000/dir",
            caFile=os.path.join(directory, "ca.pem"),
            state=os.path.join(directory, "state"),
            keyType="ecdsa-p256",
            accountOptions=accountOptions(),
        )
    ]
    for index in range(n):
        parts.append(
            SERVICE_SECTION.format(
                index=index,
                port=FIRST_PORT + index,
                public=public,
                name=f"s{index}.bench.example.test",
            )
        )
    path = os.path.join(directory, f"server-{n}.ini")
    with open(path, "w") as stream:
        stream.write("".join(parts))
    return path


def timeLoad(path: str, repeats: int) -> float:
    """
    The least CPU time of C{repeats} loads of C{path}, in seconds.
    """
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        loadConfiguration(path)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="configload-") as directory:
        print("| services | loadConfiguration CPU | per service | slope since the previous N |")
        print("|---|---|---|---|")
        previous: tuple[int, float] | None = None
        for n in sorted(arguments.n):
            seconds = timeLoad(writeConfiguration(directory, n), arguments.repeats)
            slope = "-"
            if previous is not None:
                slope = f"{(seconds - previous[1]) / (n - previous[0]) * 1e6:.1f} µs"
            print(f"| {n:,} | {seconds:.3f} s | {seconds / n * 1e6:.1f} µs | {slope} |")
            previous = (n, seconds)


if __name__ == "__main__":
    main()
