"""
A rough measure of the FTPS data path: curl downloads and uploads a big
file over PROT P from an L{FTPSService} on loopback, in this process, and
the rates and the server's CPU time are printed.  Not a benchmark against
another server (C{bench/ftps.py} is that); a check of this one's data path::

    .venv/bin/python -m tests.helpers.ftpsmeasure --size-mib 256 --repeats 3

Run from the root of the project, with curl installed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread

from tests.helpers.ftpscase import NAME, PASSWORD, USER, FTPSServiceCase

_CHUNK = b"\x5a" * (1 << 20)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _curl(caFile: str, port: int, url: str, *arguments: str) -> float:
    """
    Run curl on C{url} and give how long it took, in seconds.
    """
    started = time.monotonic()
    subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--ssl-reqd",
            "--cacert",
            caFile,
            "--resolve",
            f"{NAME}:{port}:127.0.0.1",
            "--user",
            f"{USER}:{PASSWORD}",
            *arguments,
            url,
        ],
        check=True,
    )
    return time.monotonic() - started


class _Measure(FTPSServiceCase):
    """
    The service of the tests, started outside of trial.
    """

    def __init__(self, base: str) -> None:
        super().__init__("run")
        self._base = base

    def mktemp(self) -> str:
        return os.path.join(self._base, "tree")


async def _measure(arguments: argparse.Namespace, base: str) -> list[str]:
    case = _Measure(base)
    case.setUp()
    service = case.startService()
    size = arguments.size_mib << 20
    source = os.path.join(case.served, USER, "big.bin")
    with open(source, "wb") as stream:
        for _ in range(arguments.size_mib):
            stream.write(_CHUNK)
    url = f"ftp://{NAME}:{case.port}/"
    lines = []
    for repeat in range(arguments.repeats):
        for direction, curlArguments in (
            ("download", (url + "big.bin", "--output", "/dev/null")),
            ("upload", (url + "up.bin", "--upload-file", source)),
        ):
            cpu = _cpu()
            seconds = await deferToThread(_curl, case.caFile, case.port, *curlArguments)
            used = _cpu() - cpu
            lines.append(
                f"{direction} {repeat + 1}: {size / seconds / (1 << 20):.1f} MiB/s "
                f"({seconds:.2f} s, server CPU {used:.2f} s, "
                f"{size / max(used, 1e-9) / (1 << 20):.1f} MiB per CPU second)"
            )
    await service.stopService()
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args(argv)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as base:
        done = ensureDeferred(_measure(arguments, base))
        done.addBoth(lambda outcome: result.setdefault("outcome", outcome))
        done.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
        reactor.run()  # type: ignore[attr-defined]
    outcome = result["outcome"]
    if not isinstance(outcome, list):
        outcome.raiseException()
    print("\n".join(outcome))
    print("load average:", " ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main(sys.argv[1:])
