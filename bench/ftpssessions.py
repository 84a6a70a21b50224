"""
Part (b) of the FTPS benchmark: many concurrent FTPS sessions, each
downloading a small file again and again, while the service's certificate
is renewed against pebble.

The server runs in a worker process (C{ftpssessions.py serve}): the whole
server of a configuration (C{ServerService}, the resource and its C{ftps}
service) on the reactor, with the stall probe of C{probe.py}, renewing on
command (C{Operations.renew(force=True)}, what C{letsencrypt-resource
renew --force} asks through the control socket).  It reads commands on
its standard input (C{start}, C{renew}, C{stop}) and answers on its
standard output.

The clients run in the calling process: one thread per session, each with
C{ftplib.FTP_TLS} made to resume the control connection's TLS session on
its data connections (L{letsencrypt_resource.testing.ftpsclient}), from
its own loopback address (127.0.x.y): the service allows 10 sessions per
address.  Each session logs in, sets PROT P, downloads the file
C{--downloads-per-session} times (checking its content) C{--pace} seconds
apart, quits, and starts again, until told to stop.  The sessions start
spread over the first C{--pace} seconds.  With C{--pace 0} each session
downloads as fast as it can: the load saturates the machine, and the
reactor's lateness then measures how long one pass over 200 busy
connections takes rather than any one blocking call.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

from common import FTPS_SECTION, ROOT, emitResult, parseResult, percentile
from ftpsrate import checkBanner, cpuSeconds

#: The configuration of the server of this part, after the resource's.
SERVICE_SECTION = FTPS_SECTION + "max_sessions = {maxSessions}\n"

#: The most distinct errors kept, each with its count.
ERRORS_KEPT = 10


class BusyProbe:
    """
    The reactor thread's own CPU time between two ticks of a C{LoopingCall}
    every C{interval} seconds: the longest is the longest stall the
    reactor's work would make on a machine of its own, whatever share of
    the CPU other programs take (which lengthens the stalls C{probe.py}
    measures, in wall time).
    """

    def __init__(self, reactor: Any, interval: float = 0.005):
        from twisted.internet.task import LoopingCall

        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._interval = interval
        self.longest = 0.0
        self._last = 0.0

    def start(self) -> None:
        self._last = time.thread_time()
        self._loop.start(self._interval, now=False)

    def reset(self) -> None:
        """
        Forget the longest so far.
        """
        self.longest = 0.0

    def _tick(self) -> None:
        now = time.thread_time()
        self.longest = max(self.longest, now - self._last)
        self._last = now

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()


class GCPauses:
    """
    The collections of Python's garbage collector, in whatever thread they
    run: each holds the GIL, so the reactor waits through it.  Each is
    timed in wall time and in the CPU time of its thread (the pause on a
    machine of its own).
    """

    def __init__(self) -> None:
        self._began = (0.0, 0.0)
        self.reset()

    def start(self) -> None:
        gc.callbacks.append(self._phase)

    def reset(self) -> None:
        """
        Forget the collections so far.
        """
        self.longest = self.longestCPU = self.total = 0.0
        self.longestGeneration = -1
        self.count = self.overTen = 0

    def _phase(self, phase: str, info: dict[str, int]) -> None:
        now = (time.perf_counter(), time.thread_time())
        if phase == "start":
            self._began = now
            return
        length, cpu = now[0] - self._began[0], now[1] - self._began[1]
        self.count += 1
        self.total += cpu
        self.overTen += cpu > 0.01
        self.longestCPU = max(self.longestCPU, cpu)
        if length > self.longest:
            self.longest, self.longestGeneration = length, info["generation"]

    def stop(self) -> None:
        if self._phase in gc.callbacks:
            gc.callbacks.remove(self._phase)

    def report(self) -> dict[str, Any]:
        return {
            "gc_tracked": len(gc.get_objects()),
            "gc_frozen": gc.get_freeze_count(),
            "gc_longest_ms": self.longest * 1000,
            "gc_longest_cpu_ms": self.longestCPU * 1000,
            "gc_longest_generation": self.longestGeneration,
            "gc_total_cpu_ms": self.total * 1000,
            "gc_count": self.count,
            "gc_over_10ms": self.overTen,
        }


def sourceAddress(index: int) -> str:
    """
    The loopback address session C{index} connects from: 127.0.1.1 on.
    """
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


class Load:
    """
    C{sessions} threads, each running FTPS sessions one after another
    against 127.0.0.1:C{port} until L{stop}.
    """

    def __init__(
        self,
        port: int,
        caFile: str,
        name: str,
        account: tuple[str, str],
        path: str,
        expected: bytes,
        sessions: int,
        downloadsPerSession: int,
        pace: float,
    ):
        self.port = port
        self._context = ssl.create_default_context(cafile=caFile)
        self._name = name
        self._account = account
        self._path = path
        self._expected = expected
        self._downloads = downloadsPerSession
        self._pace = pace
        self._sessionCount = sessions
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.transfers = 0
        self.failedTransfers = 0
        self.sessions = 0
        self.failedSessions = 0
        self.latencies: list[float] = []
        #: sessions started on each certificate, by serial number
        self.certificates: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self._threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(sessions)
        ]

    def start(self) -> None:
        self.started = time.perf_counter()
        self._cpu = time.process_time()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """
        Let each session finish its download, and wait for them.
        """
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self.seconds = time.perf_counter() - self.started
        self.cpuSeconds = time.process_time() - self._cpu

    def _error(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"[:160]
        if text in self.errors or len(self.errors) < ERRORS_KEPT:
            self.errors[text] += 1
        else:
            self.errors["(other errors)"] += 1

    def _run(self, index: int) -> None:
        from cryptography import x509

        from letsencrypt_resource.testing.ftpsclient import ResumingFTPS

        source = (sourceAddress(index), 0)
        if self._stopping.wait(self._pace * index / self._sessionCount):
            return
        while not self._stopping.is_set():
            client = ResumingFTPS(self._context, self._name, source_address=source)
            try:
                client.connect("127.0.0.1", self.port)
                client.login(*self._account)
                client.prot_p()
                der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
                serial = x509.load_der_x509_certificate(der).serial_number
            except Exception as error:
                with self._lock:
                    self.failedSessions += 1
                    self._error(error)
                client.close()
                continue
            with self._lock:
                self.sessions += 1
                self.certificates[serial] += 1
            self._download(client)
            try:
                client.quit()
            except Exception as error:
                with self._lock:
                    self._error(error)
            client.close()

    def _download(self, client: Any) -> None:
        for count in range(self._downloads):
            if count and self._stopping.wait(self._pace):
                return
            chunks: list[bytes] = []
            began = time.perf_counter()
            try:
                client.retrbinary(f"RETR {self._path}", chunks.append)
                if b"".join(chunks) != self._expected:
                    raise ValueError("the file downloaded differs")
            except Exception as error:
                with self._lock:
                    self.failedTransfers += 1
                    self._error(error)
                return
            with self._lock:
                self.transfers += 1
                self.latencies.append(time.perf_counter() - began)

    def report(self) -> dict[str, Any]:
        return {
            "transfers": self.transfers,
            "failed_transfers": self.failedTransfers,
            "sessions": self.sessions,
            "failed_sessions": self.failedSessions,
            "transfers_per_second": self.transfers / self.seconds,
            "latency_p50_ms": percentile(self.latencies, 0.5) * 1000,
            "latency_p99_ms": percentile(self.latencies, 0.99) * 1000,
            "latency_max_ms": max(self.latencies, default=float("nan")) * 1000,
            "sessions_by_certificate": list(self.certificates.values()),
            "errors": dict(self.errors.most_common()),
            "seconds": self.seconds,
            "cpu_seconds": self.cpuSeconds,
        }


class Server:
    """
    The worker process that runs the server, driven from this one.
    """

    def __init__(self, configuration: str, name: str, log: str):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", configuration, name, log],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            text=True,
        )
        self._expect("READY")

    def _expect(self, word: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(word):
            self.process.kill()
            raise RuntimeError(f"the server worker said {line!r}, not {word}; see its log")
        return line[len(word) :].strip()

    def _send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def startProbe(self) -> None:
        self._send("start")
        self._expect("STARTED")

    def baseline(self) -> dict[str, Any]:
        """
        The probe's figures so far (no load yet), which it then forgets.
        """
        self._send("baseline")
        return json.loads(self._expect("BASELINE"))

    def renew(self) -> dict[str, Any]:
        self._send("renew")
        return json.loads(self._expect("RENEWED"))

    def stop(self) -> dict[str, Any]:
        """
        Stop the probe and the server; its report.
        """
        out, _ = self.process.communicate("stop\n", timeout=120)
        return parseResult(out)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def runSessions(
    configuration: str,
    name: str,
    log: str,
    load: Load,
    renewals: int,
    settle: float,
    progress: Any,
) -> dict[str, Any]:
    """
    Start the server and its probe; after C{settle} seconds without load
    (the baseline of this machine), start the load, then C{renewals}
    forced renewals C{settle} seconds apart (and C{settle} seconds before
    the first and after the last); stop the load then the server.
    """
    server = Server(configuration, name, log)
    try:
        checkBanner(load.port)
        server.startProbe()
        time.sleep(settle)
        baseline = server.baseline()
        load.start()
        renewed = []
        time.sleep(settle)
        for _ in range(renewals):
            progress(f"renewing during the load ({load.transfers} transfers so far)")
            renewed.append(server.renew())
            time.sleep(settle)
        load.stop()
        serverReport = server.stop()
    finally:
        server.kill()
    return {
        "load": load.report(),
        "server": serverReport,
        "baseline": baseline,
        "renewals": renewed,
    }


def _serve(configuration: str, name: str, log: str) -> None:
    from probe import StallProbe
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react
    from twisted.internet.threads import deferToThread
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from letsencrypt_resource.config import loadConfiguration
    from letsencrypt_resource.host import ServerService, checkFileSystem
    from letsencrypt_resource.operations import Operations

    stream = open(log, "a")
    # A crash of the worker names its thread and stack on the bench's
    # stderr: probe.py's watchdog, walking the reactor thread's frames
    # while that thread runs, crashed Python 3.11.7 in 3 of 6 saturating
    # runs (a use-after-free of CPython's frames, not the server's).
    faulthandler.enable()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(stream)], redirectStandardIO=False)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def main(reactor: Any) -> None:
        parsed = loadConfiguration(configuration)
        checkFileSystem(parsed)
        server = ServerService(parsed, reactor)
        server.startService()
        assert server.resource is not None
        await server.resource.whenSettled()
        operations = Operations(server.resource, reactor)
        probe = StallProbe(reactor)
        busy = BusyProbe(reactor)
        pauses = GCPauses()
        say("READY")
        cpu = reactorCPU = 0.0
        reactorThread = f"/proc/self/task/{threading.get_native_id()}/stat"
        while (command := (await deferToThread(sys.stdin.readline)).strip()) not in ("stop", ""):
            if command == "start":
                probe.start()
                busy.start()
                pauses.start()
                cpu = time.process_time()
                reactorCPU = cpuSeconds(reactorThread)
                say("STARTED")
            elif command == "baseline":
                idle = probe.report()
                # The load's figures start now.
                probe.lateness.clear()
                probe.stalls.clear()
                idle["max_busy_ms"] = busy.longest * 1000
                busy.reset()
                idle.update(pauses.report())
                pauses.reset()
                say("BASELINE " + json.dumps(idle))
            elif command == "renew":
                began = reactor.seconds()
                [row] = await operations.renew([name], True)
                outcome = {"outcome": row["outcome"], "seconds": reactor.seconds() - began}
                say("RENEWED " + json.dumps(outcome))
        probe.stop()
        busy.stop()
        pauses.stop()
        report = probe.report()
        report["max_busy_ms"] = busy.longest * 1000
        report.update(pauses.report())
        report["cpu_seconds"] = time.process_time() - cpu
        report["reactor_cpu_seconds"] = cpuSeconds(reactorThread) - reactorCPU
        await server.stopService()
        emitResult(report)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve(*sys.argv[2:5])
