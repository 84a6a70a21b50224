"""
Benchmark workers that run the product in process (one worker process per
measurement, against a pebble the orchestrator started):

  issue   N https services from a generated configuration, built with
          ServerService(parseConfiguration(...), reactor): time from start
          until every service holds its CA-issued certificate; optionally
          with the reactor stall probe and a load client on the challenge
          site (figure 3).
  scale   M TLSCertificateConsumers registered through the public API with
          a LetsEncryptResource: start-up until all are in service,
          resident memory, CPU of one check when nothing is due (figure 2).
  switch  one service, a TLS client hammering handshakes in another
          process while resource.check(force=True) renews (figure 4).

Each prints one BENCH-RESULT JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource as rusage
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH,
    accountOptions,
    emitResult,
    names,
    tlsPeerCertificate,
    vmRSS,
    writeServerConfig,
)
from probe import StallProbe  # noqa: E402
from twisted.internet import threads  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402
from twisted.internet.task import LoopingCall, deferLater, react  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402
from zope.interface.registry import Components  # noqa: E402

from letsencrypt_resource.config import parseConfiguration  # noqa: E402
from letsencrypt_resource.host import ServerService  # noqa: E402
from letsencrypt_resource.httpclient import loadCABundle, makeHTTPClient  # noqa: E402
from letsencrypt_resource.interfaces import ICertificateConsumer  # noqa: E402
from letsencrypt_resource.resource import LetsEncryptResource  # noqa: E402
from letsencrypt_resource.storage.directory import DirectoryStorage  # noqa: E402
from letsencrypt_resource.tls import TLSCertificateConsumer  # noqa: E402


class EventCounter:
    """
    Counts the product's events by ID and keeps the time of the last of
    each, and calls hooks.
    """

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.last: dict[int, float] = {}
        self.hooks: list[Any] = []
        globalLogPublisher.addObserver(self)

    def __call__(self, event: dict) -> None:
        eventID = event.get("event_id")
        if eventID is None:
            return
        self.counts[eventID] = self.counts.get(eventID, 0) + 1
        self.last[eventID] = time.perf_counter()
        for hook in self.hooks:
            hook(eventID, event)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self)


def startLoad(kind: str, port: int, rate: float) -> subprocess.Popen | None:
    if kind == "none":
        return None
    if kind == "paced":
        return subprocess.Popen(
            [
                sys.executable,
                os.path.join(BENCH, "loadclient.py"),
                "--port",
                str(port),
                "--rate",
                str(rate),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    if kind == "wrk":
        return subprocess.Popen(
            [
                "wrk",
                "-t1",
                "-c4",
                "-d3600s",
                "--latency",
                f"http://127.0.0.1:{port}/.well-known/acme-challenge/test.txt",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    raise ValueError(kind)


def stopLoad(kind: str, process: subprocess.Popen | None) -> dict[str, Any] | None:
    if process is None:
        return None
    if kind == "paced":
        out, _ = process.communicate("", timeout=60)
        return json.loads(out.strip().splitlines()[-1])
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    return parseWrk(out)


def parseWrk(text: str) -> dict[str, Any]:
    result: dict[str, Any] = {"raw": text[-1500:]}

    def ms(value: str) -> float:
        for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
            if value.endswith(unit):
                return float(value[: -len(unit)]) * factor
        return float(value)

    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "75%", "90%", "99%"):
            result[f"p{parts[0][:-1]}_ms"] = ms(parts[1])
        elif parts[:1] == ["Latency"] and len(parts) >= 4:
            result["max_ms"] = ms(parts[3])
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif "requests in" in line:
            result["requests"] = int(parts[0])
        elif line.strip().startswith("Socket errors") or line.strip().startswith("Non-2xx"):
            result.setdefault("errors", []).append(line.strip())
    return result


def trace(message: str) -> None:
    from twisted.logger import Logger

    Logger("bench").info("bench: {message}", message=message)


# issue


async def issue(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    serviceNames = names(args.n, args.run)
    path, ports = writeServerConfig(
        args.workdir,
        args.directory_url,
        args.ca_file,
        args.challenge_port,
        serviceNames,
        args.key_type,
    )
    with open(path) as f:
        text = f.read()
    events = EventCounter()
    cpuStart = time.process_time()
    start = time.perf_counter()
    configuration = parseConfiguration(text, args.workdir)
    server = ServerService(configuration, reactor)
    server.startService()
    # Responsiveness is measured from here: before, nothing listens yet and
    # the reactor is busy building the N services (reported as start-up).
    startup = time.perf_counter() - start
    probe = StallProbe(reactor) if args.probe else None
    if probe:
        probe.start()
    load = startLoad(args.load, args.challenge_port, args.rate)
    await server.resource.whenSettled()
    settled = time.perf_counter()
    cpu = time.process_time() - cpuStart
    if probe:
        probe.stop()
    # In a thread: the challenge site must go on answering until the load
    # client has stopped.
    loadResult = await threads.deferToThread(stopLoad, args.load, load)
    consumers = [s.consumer for s in server.fileServices]
    issued = sum(
        1
        for c in consumers
        if c.tls.certifiedKey is not None and not c.tls.certifiedKey.provisional
    )
    result: dict[str, Any] = {
        "seconds": settled - start,
        "startup_seconds": startup,
        "last_20016_seconds": events.last.get(20016, settled) - start,
        "certificates": issued,
        "failures_20017": events.counts.get(20017, 0),
        "cpu_seconds": cpu,
        "rss_bytes": vmRSS(),
        "maxrss_bytes": rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if probe:
        result["stalls"] = probe.report()
    if loadResult is not None:
        result["load"] = loadResult
    if args.verify:
        result["verified"] = await threads.deferToThread(
            verifyAll, ports, serviceNames, args.root_file
        )
    await server.stopService()
    return result


def verifyAll(ports: list[int], serviceNames: list[str], rootFile: str) -> int:
    ok = 0
    for port, name in zip(ports, serviceNames, strict=False):
        tlsPeerCertificate(port, name, rootFile)
        ok += 1
    return ok


# scale


RESOURCE_ONLY = """\
[resources/bench]
type = lets-encrypt
address = 127.0.0.1
port = {port}
acme_url = {url}
acme_ca_file = {ca}
state_directory = {state}
key_type = {keyType}
{accountOptions}"""


async def scale(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """
    M consumers through the public API: a component registry holding M
    TLSCertificateConsumers, a DirectoryStorage and the resource.
    """
    events = EventCounter()
    options = parseConfiguration(
        RESOURCE_ONLY.format(
            port=args.challenge_port,
            url=args.directory_url,
            ca=args.ca_file,
            state=os.path.join(args.workdir, "state"),
            keyType=args.key_type,
            accountOptions=accountOptions(),
        ),
        args.workdir,
    ).resource
    rssBefore = vmRSS()
    cpuStart = time.process_time()
    start = time.perf_counter()
    registry = Components("bench")
    consumers = []
    for index, name in enumerate(names(args.n, args.run)):
        consumer = TLSCertificateConsumer(f"service-{index}", (name,))
        registry.registerUtility(consumer, ICertificateConsumer, name=f"s{index:05d}")
        consumers.append(consumer)
    http, pool = makeHTTPClient(reactor, loadCABundle(options.acmeCAFile))
    storage = DirectoryStorage(options.stateDirectory, reactor)
    resource = LetsEncryptResource(options, registry, storage, reactor, http, closeStorage=True)
    if args.log_file:
        # Shows in the log whether the reactor still runs timed calls.
        heartbeat = LoopingCall(lambda: trace("heartbeat"))
        heartbeat.clock = reactor
        heartbeat.start(5.0, now=False)
    resource.startService()
    trace("started")
    inServiceOK = True
    try:
        await gatherResults([c.whenCertificate() for c in consumers]).addTimeout(
            args.settle_timeout, reactor
        )
    except Exception:
        inServiceOK = False
    inService = time.perf_counter()
    trace(f"in service: {inServiceOK}")
    inServiceCPU = time.process_time() - cpuStart
    provisional = sum(1 for c in consumers if c.tls.certifiedKey and c.tls.certifiedKey.provisional)
    # A partial result first: should the process wedge before settling,
    # the orchestrator kills it and still has the start-up figures.
    emitResult(
        {
            "consumers": args.n,
            "stage": "in service",
            "in_service": inServiceOK,
            "in_service_seconds": (inService - start) if inServiceOK else None,
            "in_service_cpu_seconds": inServiceCPU,
            "provisional_at_start": provisional,
            "settled": False,
            "settled_seconds": None,
            "rss_bytes": vmRSS(),
            "recursion_limit": sys.getrecursionlimit(),
        }
    )
    settling = resource.whenSettled()
    settling.addTimeout(args.settle_timeout, reactor)
    settledOK = True
    try:
        await settling
    except Exception:
        settledOK = False
    settled = time.perf_counter()
    trace(f"settled: {settledOK}")
    settledCPU = time.process_time() - cpuStart
    issued = sum(1 for c in consumers if c.tls.certifiedKey and not c.tls.certifiedKey.provisional)
    pending = sum(1 for m in resource.managed.values() if m.attempt is not None)
    # Let anything the first check scheduled run, then measure checks: the
    # CPU of the check() call itself, which starts nothing when nothing is
    # due (and returns a Deferred that has fired, unless earlier attempts
    # are still pending).
    await deferLater(reactor, 0.2, lambda: None)
    checks = []
    walls = []
    started = []
    for _ in range(args.checks):
        orders = events.counts.get(20155, 0)
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        fired: list[object] = []
        resource.check().addBoth(fired.append)
        walls.append(time.perf_counter() - wall0)
        checks.append(time.process_time() - cpu0)
        started.append(events.counts.get(20155, 0) - orders)
        await deferLater(reactor, 0.05, lambda: None)
    trace("checks done")
    result = {
        "consumers": args.n,
        "stage": "done",
        "in_service": inServiceOK,
        "in_service_seconds": (inService - start) if inServiceOK else None,
        "in_service_cpu_seconds": inServiceCPU,
        "provisional_at_start": provisional,
        "settled": settledOK,
        "settled_seconds": (settled - start) if settledOK else None,
        "settled_cpu_seconds": settledCPU if settledOK else None,
        "attempts_still_pending": pending,
        "ca_issued": issued,
        "orders_20155": events.counts.get(20155, 0),
        "planned_20159": events.counts.get(20159, 0),
        "failures_20017": events.counts.get(20017, 0),
        "rss_bytes": vmRSS(),
        "rss_before_bytes": rssBefore,
        "maxrss_bytes": rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss * 1024,
        "check_cpu_seconds": sorted(checks)[len(checks) // 2],
        "check_cpu_all": checks,
        "check_wall_seconds": sorted(walls)[len(walls) // 2],
        "check_orders_started": sum(started),
        "recursion_limit": sys.getrecursionlimit(),
    }
    trace("stopping")
    emitResult(result)  # before stopping, in case stopping hangs
    await resource.stopService()
    trace("stopped resource")
    await pool.closeCachedConnections()
    trace("closed pool")
    return result


# switch


async def switch(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    serviceNames = names(1, args.run)
    extra = f"store_directory = {os.path.join(args.workdir, 'exported')}\n" if args.export else ""
    path, ports = writeServerConfig(
        args.workdir,
        args.directory_url,
        args.ca_file,
        args.challenge_port,
        serviceNames,
        args.key_type,
        extra,
    )
    with open(path) as f:
        configuration = parseConfiguration(f.read(), args.workdir)
    events = EventCounter()
    stored: list[float] = []
    delivered: list[float] = []

    def hook(eventID: int, event: dict) -> None:
        if eventID == 20015:
            stored.append(time.time())
        elif eventID == 20016:
            delivered.append(time.time())

    events.hooks.append(hook)
    server = ServerService(configuration, reactor)
    server.startService()
    await server.resource.whenSettled()
    consumer = server.fileServices[0].consumer
    hammer = subprocess.Popen(
        [
            sys.executable,
            os.path.join(BENCH, "tlshammer.py"),
            "--port",
            str(ports[0]),
            "--name",
            serviceNames[0],
            "--root-file",
            args.root_file,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    await deferLater(reactor, 1.0, lambda: None)
    renewals = []
    for _ in range(args.renewals):
        del stored[:], delivered[:]
        old = consumer.tls.certifiedKey.certificate.serial_number
        await server.resource.check(force=True)
        new = consumer.tls.certifiedKey.certificate.serial_number
        if new == old or not stored:
            raise RuntimeError("the forced check did not renew")
        renewals.append(
            {"serial": format(new, "x"), "stored": stored[0], "delivered": delivered[-1]}
        )
        await deferLater(reactor, args.gap, lambda: None)
    out, _ = await threads.deferToThread(hammer.communicate, "")
    seen = json.loads(out.strip().splitlines()[-1])
    latencies = []
    for renewal in renewals:
        first = seen["serials"].get(renewal["serial"])
        renewal["first_handshake_end"] = first["first_end"] if first else None
        renewal["switch_ms"] = (first["first_end"] - renewal["stored"]) * 1000 if first else None
        renewal["in_process_ms"] = (renewal["delivered"] - renewal["stored"]) * 1000
        latencies.append(renewal["switch_ms"])
    await server.stopService()
    return {
        "renewals": renewals,
        "handshakes": seen["handshakes"],
        "failed_handshakes": seen["failed"],
        "failures": seen["failures"],
        "export": args.export,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["issue", "scale", "switch"])
    parser.add_argument("--directory-url", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--root-file", required=True)
    parser.add_argument("--challenge-port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--run", default="r")
    parser.add_argument("--key-type", default="ecdsa-p256")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--load", choices=["none", "paced", "wrk"], default="none")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--checks", type=int, default=5)
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--renewals", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.5)
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--log", action="store_true", help="log events to stderr")
    parser.add_argument("--log-file", help="log events to this file")
    parser.add_argument(
        "--recursion-limit", type=int, help="diagnosis: raise Python's recursion limit"
    )
    args = parser.parse_args()
    if args.recursion_limit:
        sys.setrecursionlimit(args.recursion_limit)
    if args.log or args.log_file:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        stream = open(args.log_file, "a") if args.log_file else sys.stderr
        globalLogBeginner.beginLoggingTo([textFileLogObserver(stream)])
    os.makedirs(args.workdir, exist_ok=True)
    command = {"issue": issue, "scale": scale, "switch": switch}[args.command]

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            emitResult(await command(reactor, args))

        return Deferred.fromCoroutine(go())

    react(run)


if __name__ == "__main__":
    main()
