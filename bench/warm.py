"""
Warm start on N stored certificates, with no ACME server: how long until
every consumer is in service, the CPU it took, and the resident memory.

    .venv/bin/python bench/warm.py --n 1000 10000 --repeats 2
    .venv/bin/python bench/warm.py --n 10000 --profile cpu
    .venv/bin/python bench/warm.py --n 10000 --profile memory
    .venv/bin/python bench/warm.py --n 1000 10000 --repeats 1 --check
    .venv/bin/python bench/warm.py --n 1000 10000 --repeats 1 --cold --probe

The state directory of each N is fabricated once (a local CA signs N leaf
certificates of one name each, written with L{Records} over a
L{DirectoryStorage}) and kept under C{--workdir}.  Each measurement runs
in a fresh process: N L{TLSCertificateConsumer}s in a component registry,
a L{LetsEncryptResource} on the state directory (its ACME URL leads
nowhere, its challenge site is off), timed from the resource's start until
every consumer has its certificate.  C{--profile cpu} prints the functions
cProfile finds costliest on the way; C{--profile memory} what tracemalloc
finds still allocated at the end, by line (Python allocations only: the
memory OpenSSL and cryptography allocate in C is in the RSS alone).
C{--contexts} then builds every service's TLS context, as a first
handshake to each would, and reports its CPU and the RSS after;
C{--probe} measures the reactor's stalls during the start; C{--check} then
runs a forced check of every set (the attempts fail: no ACME server
answers) and measures how long the call and the longest reactor stall
took, and the longest full (generation 2) collection of the garbage
collector in that time; C{--gc-freeze} first moves what the start made out
of the collector's reach (C{gc.freeze}).  C{--cold} starts on an empty
state directory instead (made for the run, removed after it): every set
goes on a provisional certificate, and the time is until every consumer
has one it can present; C{--contexts} then shows what signing them at
their first handshakes costs.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emitResult, names, parseResult, summary, vmRSS  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from probe import StallProbe  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402
from zope.interface.registry import Components  # noqa: E402

from letsencrypt_resource.certificates import CA_KEY_USAGE, CertifiedKey  # noqa: E402
from letsencrypt_resource.config import ResourceOptions  # noqa: E402
from letsencrypt_resource.interfaces import ICertificateConsumer  # noqa: E402
from letsencrypt_resource.keys import generateKey, withDomainNames  # noqa: E402
from letsencrypt_resource.managed import ManagedCertificate  # noqa: E402
from letsencrypt_resource.renewalstate import storedRecord  # noqa: E402
from letsencrypt_resource.resource import LetsEncryptResource  # noqa: E402
from letsencrypt_resource.setloading import settingsFingerprint  # noqa: E402
from letsencrypt_resource.storage.directory import DirectoryStorage  # noqa: E402
from letsencrypt_resource.storage.records import Records  # noqa: E402
from letsencrypt_resource.tls import TLSCertificateConsumer  # noqa: E402

#: The run label of the fabricated names (see L{common.names}).
RUN = "warm"
#: Where the ACME server would be: nothing listens there.
NOWHERE = "http://127.0.0.1:9/directory"
#: Seconds the reactor is watched after a forced check starts (C{--check}).
CHECK_WATCHED = 3.0


def _cProfile() -> Any:
    """
    The standard library's cProfile, imported without this folder on the
    path: bench/profile.py would stand for the C{profile} it imports.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import cProfile
    finally:
        sys.path[:] = saved
    return cProfile


class Inline:
    """
    Runs the storage's file operations in the calling thread: the
    fabricating process has no reactor running.
    """

    def run(self, f: Any, *args: Any) -> Deferred[Any]:
        return maybeDeferred(f, *args)


def benchOptions(state: str) -> ResourceOptions:
    """
    The resource's options: its state in C{state}, no challenge site, an
    ACME server nowhere.
    """
    return ResourceOptions(
        section="resources/bench",
        stateDirectory=state,
        challengeSite=False,
        acmeURL=NOWHERE,
        agreeTOS=True,
    )


def fabricated(workdir: str, n: int, facts: bool = True) -> str:
    """
    The state directory of C{n} fabricated certificates kept under
    C{workdir} (see L{fabricate}), made when missing; one for each way of
    saving the renewal state, so that a state kept from before is never
    measured for the other.
    """
    state = os.path.join(workdir, f"warm-state-{n}-{'facts' if facts else 'nofacts'}")
    fabricate(state, n, facts)
    if not takenAsSaved(state, n, facts):
        # Kept from a version that saved its facts otherwise: made again.
        shutil.rmtree(state)
        fabricate(state, n, facts)
        if not takenAsSaved(state, n, facts):
            raise SystemExit(f"{state}: the product does not take back the facts it saves")
    return state


def takenAsSaved(state: str, n: int, facts: bool) -> bool:
    """
    Whether the product takes the first of the C{n} certificates of
    C{state} back as it was saved: with its facts (unparsed) when C{facts},
    parsed otherwise.  A kept state whose facts this version refuses would
    be measured, silently, as one without them.
    """
    records = Records(DirectoryStorage(state, None, workers=Inline()))  # type: ignore[arg-type]
    domains = (names(n, RUN)[0],)
    sets: list[Any] = []
    records.loadSets([domains]).addCallback(sets.extend)
    saved = sets[0].renewalState()
    taken = sets[0].certifiedKey(*storedRecord(saved))
    return taken is not None and (taken.recorded is not None) == facts


def fabricate(state: str, n: int, facts: bool = True) -> None:
    """
    Fill C{state} with C{n} stored ECDSA certificates, signed by a local
    CA, valid for 90 days from now, each with the renewal state a success
    saves (the stored certificate's digest among it); nothing when it holds
    them already.

    @param facts: Whether the states keep what they record of their
        certificate (C{certificate_facts}), as this version saves them, or
        not, as earlier versions did: the start-up and the status then
        parse every certificate.
    """
    settings = settingsFingerprint(benchOptions(state))
    done = os.path.join(state, "fabricated")
    if os.path.exists(done):
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    caKey = generateKey("ecdsa-p256")
    caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench warm-start CA")])
    caCertificate = (
        x509.CertificateBuilder()
        .issuer_name(caName)
        .subject_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(caKey, hashes.SHA256())
    )
    records = Records(DirectoryStorage(state, None, workers=Inline()))  # type: ignore[arg-type]
    for name in names(n, RUN):
        key = generateKey("ecdsa-p256")
        builder = (
            x509.CertificateBuilder()
            .issuer_name(caName)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        certificate = withDomainNames(builder, (name,)).sign(caKey, hashes.SHA256())
        issued = CertifiedKey(key, certificate, (caCertificate,))
        records.saveCertificate((name,), issued)
        managed = ManagedCertificate((name,), settings)
        managed.current = issued
        managed.orderedBy = (f"id-{name}", NOWHERE, "http://127.0.0.1:9/account/1")
        saved = managed.state()
        if not facts:
            del saved["certificate_facts"]
        records.saveRenewalState((name,), saved)
    with open(done, "w") as f:
        f.write(f"{n}\n")


async def start(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """
    Start a resource on the fabricated state of C{args.n} certificates and
    measure until every consumer is in service.
    """
    options = benchOptions(args.state)
    profiler = _cProfile().Profile() if args.profile == "cpu" else None
    if args.profile == "memory":
        tracemalloc.start(8)
    rssBefore = vmRSS()
    cpuStart = time.process_time()
    wallStart = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    registry = Components("bench")
    consumers = []
    for index, name in enumerate(names(args.n, RUN)):
        consumer = TLSCertificateConsumer(f"service-{index}", (name,))
        registry.registerUtility(consumer, ICertificateConsumer, name=f"s{index:05d}")
        consumers.append(consumer)
    storage = DirectoryStorage(args.state, reactor)
    resource = LetsEncryptResource(options, registry, storage, reactor, closeStorage=True)
    probe = StallProbe(reactor) if args.probe else None
    if probe is not None:
        probe.start()
    resource.startService()
    await gatherResults([c.whenCertificate() for c in consumers])
    wall = time.perf_counter() - wallStart
    cpu = time.process_time() - cpuStart
    if probe is not None:
        probe.stop()
    if profiler is not None:
        profiler.disable()
    result: dict[str, Any] = {
        "n": args.n,
        "seconds": wall,
        "cpu_seconds": cpu,
        "rss_bytes": vmRSS(),
        "rss_before_bytes": rssBefore,
        "provisional": sum(1 for c in consumers if c.tls.certifiedKey.provisional),
    }
    if probe is not None:
        stalls = probe.report()
        result["max_stall_ms"] = stalls["max_stall_ms"]
        result["stalls_over_50ms"] = stalls["stalls_over_50ms"]
        result["longest_stalls"] = stalls["longest"]
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        result["profile"] = out.getvalue()
    if args.profile == "memory":
        snapshot = tracemalloc.take_snapshot()
        result["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        result["profile"] = "\n".join(
            str(stat) for stat in snapshot.statistics("lineno")[: args.top]
        )
    if args.check:
        # A forced check of every set: how long it holds the reactor at
        # once, and the longest stall in the seconds its attempts start
        # (they fail, as no ACME server answers).
        probe = StallProbe(reactor)
        probe.start()
        cpuStart = time.process_time()
        wallStart = time.perf_counter()
        pauses: list[float] = []
        began: list[float] = []

        def timeCollections(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                began[:] = [time.perf_counter()]
            elif info["generation"] == 2:
                pauses.append(time.perf_counter() - began[0])

        gc.callbacks.append(timeCollections)
        if args.gc_freeze:
            gc.freeze()
        resource.check(force=True)
        result["check_call_seconds"] = time.perf_counter() - wallStart
        await deferLater(reactor, CHECK_WATCHED, lambda: None)
        result["check_cpu_seconds"] = time.process_time() - cpuStart
        probe.stop()
        stalls = probe.report()
        result["check_max_stall_ms"] = stalls["max_stall_ms"]
        result["check_longest_stalls"] = stalls["longest"]
        result["check_gc_pause_ms"] = max(pauses, default=0.0) * 1e3
        gc.callbacks.remove(timeCollections)
    if args.contexts:
        # What the first handshake of every service costs, all at once.
        cpuStart = time.process_time()
        for consumer in consumers:
            consumer.tls.serverConnectionForTLS(None)
        result["contexts_cpu_seconds"] = time.process_time() - cpuStart
        result["contexts_rss_bytes"] = vmRSS()
    emitResult(result)
    await resource.stopService()
    return result


def measure(args: argparse.Namespace, n: int, profile: str | None) -> dict[str, Any]:
    """
    One measurement of C{n} certificates, in a fresh process.
    """
    if args.cold:
        os.makedirs(args.workdir, exist_ok=True)
        state = tempfile.mkdtemp(prefix=f"cold-state-{n}-", dir=args.workdir)
    else:
        state = fabricated(args.workdir, n, not args.no_facts)
    try:
        return _measureIn(args, n, profile, state)
    finally:
        if args.cold:
            shutil.rmtree(state)


def _measureIn(args: argparse.Namespace, n: int, profile: str | None, state: str) -> dict[str, Any]:
    """
    One measurement of C{n} certificates on the state directory C{state}.
    """
    command = [sys.executable, __file__, "--worker", "--n", str(n), "--state", state]
    command += ["--top", str(args.top)]
    if profile:
        command += ["--profile", profile]
    if args.contexts:
        command.append("--contexts")
    if args.probe:
        command.append("--probe")
    if args.check:
        command.append("--check")
    if args.gc_freeze:
        command.append("--gc-freeze")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return parseResult(output)


def table(results: dict[int, list[dict[str, Any]]]) -> str:
    """
    The figures as a Markdown table: the median of the repeats, and their
    spread.
    """
    lines = [
        "| N | start-up until all in service (s) | CPU (s) | RSS (MB) "
        "| RSS added by the start (MB) | per certificate |",
        "|---|---|---|---|---|---|",
    ]
    for n, runs in sorted(results.items()):
        wall = summary(r["seconds"] for r in runs)
        cpu = summary(r["cpu_seconds"] for r in runs)
        rss = summary(r["rss_bytes"] / 1e6 for r in runs)
        added = summary((r["rss_bytes"] - r["rss_before_bytes"]) / 1e6 for r in runs)
        lines.append(
            f"| {n:,} | {wall['median']:.2f} ({wall['min']:.2f}-{wall['max']:.2f}) "
            f"| {cpu['median']:.2f} | {rss['median']:.0f} | {added['median']:.0f} "
            f"| {cpu['median'] / n * 1e3:.3f} ms CPU, {added['median'] / n * 1e3:.1f} KB |"
        )
    if any("max_stall_ms" in r for runs in results.values() for r in runs):
        lines += ["", "| N | longest reactor stall (ms) | stalls over 50 ms |", "|---|---|---|"]
        for n, runs in sorted(results.items()):
            stall = summary(r["max_stall_ms"] for r in runs)
            over = summary(r["stalls_over_50ms"] for r in runs)
            lines.append(f"| {n:,} | {stall['median']:.0f} | {over['median']:.0f} |")
    if any("check_call_seconds" in r for runs in results.values() for r in runs):
        lines += [
            "",
            f"| N | forced check: the call (ms) | longest stall (ms) | longest full collection "
            f"(ms) | CPU in its first {CHECK_WATCHED:g} s |",
            "|---|---|---|---|---|",
        ]
        for n, runs in sorted(results.items()):
            call = summary(r["check_call_seconds"] * 1e3 for r in runs)
            stall = summary(r["check_max_stall_ms"] for r in runs)
            cpu = summary(r["check_cpu_seconds"] for r in runs)
            collection = summary(r["check_gc_pause_ms"] for r in runs)
            lines.append(
                f"| {n:,} | {call['median']:.0f} | {stall['median']:.0f} "
                f"| {collection['median']:.0f} | {cpu['median']:.2f} |"
            )
    if any("contexts_cpu_seconds" in r for runs in results.values() for r in runs):
        lines += ["", "| N | then every TLS context built: CPU (s) | RSS (MB) |", "|---|---|---|"]
        for n, runs in sorted(results.items()):
            cpu = summary(r["contexts_cpu_seconds"] for r in runs)
            rss = summary(r["contexts_rss_bytes"] / 1e6 for r in runs)
            lines.append(f"| {n:,} | {cpu['median']:.2f} | {rss['median']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", choices=["cpu", "memory"])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--contexts",
        action="store_true",
        help="then build every service's TLS context, as a first handshake to each would",
    )
    parser.add_argument(
        "--workdir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="measure the reactor's stalls during the start (bench/probe.py)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="then run a forced check of every set and measure the reactor's stalls",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="with --check: move what the start made out of the collector's reach first",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="start on an empty state directory: every set on a provisional certificate",
    )
    parser.add_argument(
        "--no-facts",
        action="store_true",
        help="renewal states without certificate_facts, as versions before saved them",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.n = args.n[0]
        react(lambda reactor: Deferred.fromCoroutine(start(reactor, args)))
        return
    results: dict[int, list[dict[str, Any]]] = {}
    for n in args.n:
        for _ in range(1 if args.profile else args.repeats):
            result = measure(args, n, args.profile)
            results.setdefault(n, []).append(result)
            if args.profile:
                print(f"## N = {n:,}: {args.profile} profile\n\n{result['profile']}")
    print(table(results))


if __name__ == "__main__":
    main()
