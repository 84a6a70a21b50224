"""
The real twistd on a generated configuration of N services: how long from
the spawn of C{twistd -n lets-encrypt --config <ini>} until every service
presents its stored certificate, and the resident memory then, at each N;
the cost per certificate and the slope between consecutive N, and a plot
of the cost per certificate against N (matplotlib, the C{bench} extra).

    .venv/bin/python bench/twistdscale.py --n 1000 3000 10000 --repeats 2

Each N runs on a copy of the state directory C{bench/warm.py} fabricates
(N stored ECDSA certificates with their renewal state, made once and kept
under C{--workdir}), with one C{https} service per certificate, each on
its own port of 127.0.0.1 (twistd's open file limit raised to 2N + 1024
when it is lower), the ACME server nowhere and no challenge site:
the configuration path, the host and the TLS listeners are all measured,
as users run them.  All are in service once the server has logged events
20208 (every set on its certificate, with none waiting) and 20209 (every
service listening).  With C{--cold}, the state directory starts empty:
every set goes on a provisional certificate.  The plot is written to
C{--workdir}/twistd-scale.png.  The package is compiled to bytecode
first, as installing it does (C{--source}: not).  C{--status} then times
C{python -m letsencrypt_resource status --json} against the running
server (answered over its control socket), and again once it stopped
(the command reads the state itself).  C{--phases} also gives the time
from the spawn until twistd's first log line (the interpreter, the imports,
reading the configuration and building the services, all before the
reactor runs) and until the control socket exists.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT, names  # noqa: E402
from warm import RUN, fabricated  # noqa: E402

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
#: The first port of the generated services.
FIRST_PORT = 21000
#: The loopback address the generated services listen on (C{--address}):
#: benches on different addresses can run at once on the same ports.
ADDRESS = "127.0.0.1"
#: The most seconds one start may take.
TIMEOUT = 300.0
#: The ACME server: nowhere (the configuration takes https:// only).
NOWHERE = "https://127.0.0.1:9/directory"
#: The events that say all services are in service: every set has its
#: certificate, every service listens.
IN_SERVICE = ("] 20208 ", "] 20209 ")
#: How often C{--phases} looks for the control socket, in seconds.
PHASE_POLL = 0.002
#: What events 20208 and 20209 say when every set has a certificate and
#: every service listens.
ALL_IN_SERVICE = ("; 0 domain sets wait", ", 0 cannot,")


def moreFiles(n: int) -> Callable[[], None]:
    """
    What raises the open file limit of twistd to what N services need:
    each listens on a socket and holds its folder open.
    """

    def raiseLimit() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = max(soft, 2 * n + 1024)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))

    return raiseLimit


SERVER = """\
[server]
name = twistd-scale

[resources/bench]
type = lets-encrypt
acme_url = {acme}
agree_tos = yes
challenge_site = no
state_directory = {state}
"""

SERVICE = """
[services/s{index:05d}]
type = https
address = {address}
port = {port}
path = {public}
ssl_domains = {name}
"""


def writeConfiguration(directory: str, state: str, n: int, firstPort: int = FIRST_PORT) -> str:
    """
    Write the configuration of the resource on C{state} and C{n} https
    services, one for each fabricated certificate, on the ports from
    C{firstPort} on, on L{ADDRESS}; return its path.
    """
    public = os.path.join(directory, "public")
    os.makedirs(public, exist_ok=True)
    parts = [SERVER.format(acme=NOWHERE, state=state)]
    for index, name in enumerate(names(n, RUN)):
        parts.append(
            SERVICE.format(
                index=index, address=ADDRESS, port=firstPort + index, public=public, name=name
            )
        )
    path = os.path.join(directory, "server.ini")
    with open(path, "w") as stream:
        stream.write("".join(parts))
    return path


class _AddressAction(argparse.Action):
    """
    Set L{ADDRESS} from C{--address}.
    """

    def __call__(
        self, parser: object, namespace: object, value: object, option: object = None
    ) -> None:
        global ADDRESS
        if not str(value).startswith("127."):
            raise argparse.ArgumentError(self, "a loopback address (127.x.y.z) only")
        ADDRESS = str(value)


def addAddressArgument(parser: argparse.ArgumentParser) -> None:
    """
    Add C{--address}, the loopback address of the generated services.
    """
    parser.add_argument(
        "--address",
        action=_AddressAction,
        default=ADDRESS,
        help="the loopback address the services listen on: benches on different "
        "addresses can share a port range (default 127.0.0.1)",
    )


def residentBytes(pid: int) -> int:
    """
    The resident memory of process C{pid}.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpuSeconds(pid: int) -> float:
    """
    The CPU time (user and system) process C{pid} used so far.
    """
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timeStatus(path: str, n: int) -> float:
    """
    The wall time of C{status --json} on the configuration C{path}, which
    must list C{n} sets.
    """
    start = time.perf_counter()
    output = subprocess.run(
        [sys.executable, "-m", "letsencrypt_resource", "status", "--json", "--config", path],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    ).stdout
    seconds = time.perf_counter() - start
    listed = output.count(b'"names"')
    if listed < n:
        raise RuntimeError(f"status listed {listed} sets of {n}")
    return seconds


def stateFor(workdir: str, directory: str, n: int, cold: bool, facts: bool = True) -> str:
    """
    The state directory of a run under C{directory}: a copy of the N
    stored certificates C{bench/warm.py} fabricates (made once, kept under
    C{workdir}; their renewal states with their certificates' facts, or
    without, as versions before saved them, when not C{facts}), or an
    empty one when C{cold}.
    """
    state = os.path.join(directory, "state")
    if cold:
        os.mkdir(state, 0o700)
    else:
        shutil.copytree(fabricated(workdir, n, facts), state)
    return state


def spawn(directory: str, path: str, n: int, tree: str = ROOT) -> subprocess.Popen[bytes]:
    """
    Start C{twistd -n lets-encrypt} on the configuration C{path} of N
    services, with the package of the source tree C{tree}, in C{directory},
    its output (both streams) on a pipe.
    """
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "lets-encrypt", "--config", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=directory,
        env={**os.environ, "PYTHONPATH": os.path.abspath(tree)},
        preexec_fn=moreFiles(n),
    )
    assert process.stdout is not None
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """
    Stop twistd as an operator does (C{SIGTERM}); kill it if it has not
    ended within a minute.
    """
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def startOnce(
    workdir: str,
    n: int,
    status: bool,
    cold: bool = False,
    firstPort: int = FIRST_PORT,
    phases: bool = False,
    facts: bool = True,
) -> dict[str, float]:
    """
    Start twistd on N services once; return its start-up time, CPU and
    resident memory once all are in service, and with C{status}, how long
    C{status --json} took with the server and without it.

    @param cold: Whether the state directory starts empty.
    @param firstPort: The port of the first service; the others follow.
    @param phases: Whether to time twistd's first line and the control
        socket too (C{first_line}, C{control}), and the CPU twistd used
        until each (C{first_line_cpu}, C{control_cpu}).
    @param facts: See L{stateFor}.
    """
    with tempfile.TemporaryDirectory(prefix=f"twistd-{n}-", dir=workdir) as directory:
        state = stateFor(workdir, directory, n, cold, facts)
        path = writeConfiguration(directory, state, n, firstPort)
        start = time.perf_counter()
        process = spawn(directory, path, n)
        try:
            seen: set[str] = set()
            buffer, tail = b"", []
            marks: dict[str, float] = {}
            socket = os.path.join(state, "control.sock")
            while len(seen) < len(IN_SERVICE):
                if phases and "control" not in marks and os.path.exists(socket):
                    marks["control"] = time.perf_counter() - start
                    marks["control_cpu"] = cpuSeconds(process.pid)
                if time.perf_counter() - start > TIMEOUT:
                    raise RuntimeError("twistd timed out:\n" + "\n".join(tail))
                wait = PHASE_POLL if phases and "control" not in marks else 1.0
                ready, _, _ = select.select([process.stdout], [], [], wait)
                chunk = os.read(process.stdout.fileno(), 1 << 16) if ready else b""
                if ready and not chunk:
                    raise RuntimeError("twistd exited:\n" + "\n".join(tail))
                buffer += chunk
                if chunk and "first_line" not in marks:
                    marks["first_line"] = time.perf_counter() - start
                    marks["first_line_cpu"] = cpuSeconds(process.pid)
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    tail = (tail + [line])[-30:]
                    for event, all in zip(IN_SERVICE, ALL_IN_SERVICE, strict=True):
                        if event in line and all not in line:
                            raise RuntimeError("not all in service:\n" + "\n".join(tail))
                        if event in line:
                            seen.add(event)
            seconds = time.perf_counter() - start
            result = {
                "seconds": seconds,
                "cpu": cpuSeconds(process.pid),
                "rss": residentBytes(process.pid),
                **marks,
            }
            if status:
                result["status_server"] = timeStatus(path, n)
        finally:
            stop(process)
        if status:
            result["status_alone"] = timeStatus(path, n)
    return result


def plot(rows: list[dict[str, float]], path: str, cold: bool = False) -> None:
    """
    Draw the start-up time and the memory per certificate against N.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
    ns = [row["n"] for row in rows]
    left.plot(ns, [row["seconds"] / row["n"] * 1e3 for row in rows], "o-", label="wall")
    left.plot(ns, [row["cpu"] / row["n"] * 1e3 for row in rows], "s--", label="CPU")
    left.set(xlabel="services (N)", ylabel="start-up per certificate (ms)", ylim=(0, None))
    left.legend()
    right.plot(ns, [row["rss"] / row["n"] / 1024 for row in rows], "o-")
    right.set(xlabel="services (N)", ylabel="RSS per certificate (KB)", ylim=(0, None))
    certificates = "provisional certificates (cold)" if cold else "stored certificates"
    figure.suptitle(f"twistd -n lets-encrypt: N https services on {certificates}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def compilePackage(tree: str = ROOT) -> None:
    """
    Compile the package's modules and the plugin in C{tree} to bytecode,
    as installing the package does: where bytecode is not written at
    import (C{PYTHONDONTWRITEBYTECODE}, as on this machine), each start of
    the source tree compiled every module again, about 0.5 s of CPU that
    an installed server never pays.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "letsencrypt_resource", "twisted/plugins"],
        check=True,
        cwd=tree,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--status", action="store_true", help="time status --json too")
    parser.add_argument("--cold", action="store_true", help="start on an empty state directory")
    parser.add_argument(
        "--first-port",
        type=int,
        default=FIRST_PORT,
        help="the port of the first service (another bench may hold the default range)",
    )
    addAddressArgument(parser)
    parser.add_argument(
        "--phases",
        action="store_true",
        help="time twistd's first line and the control socket too",
    )
    parser.add_argument(
        "--source",
        action="store_true",
        help="do not compile the package first (each start compiles it if bytecode is not written)",
    )
    parser.add_argument(
        "--no-facts",
        action="store_true",
        help="renewal states without certificate_facts, as versions before saved them",
    )
    arguments = parser.parse_args()
    arguments.workdir = os.path.abspath(arguments.workdir)
    os.makedirs(arguments.workdir, exist_ok=True)
    if not arguments.source:
        compilePackage()
    rows = []
    for n in sorted(arguments.n):
        runs = [
            startOnce(
                arguments.workdir,
                n,
                arguments.status,
                arguments.cold,
                arguments.first_port,
                arguments.phases,
                not arguments.no_facts,
            )
            for _ in range(arguments.repeats)
        ]
        row = {"n": n, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
        row["low"] = min(r["seconds"] for r in runs)
        row["high"] = max(r["seconds"] for r in runs)
        rows.append(row)
    print("| N | start-up until all in service | CPU | RSS | per certificate | slope |")
    print("|---|---|---|---|---|---|")
    previous = None
    for row in rows:
        n = row["n"]
        slope = "-"
        if previous is not None:
            dn = n - previous["n"]
            slope = (
                f"{(row['seconds'] - previous['seconds']) / dn * 1e3:.3f} ms, "
                f"{(row['rss'] - previous['rss']) / dn / 1024:.1f} KB"
            )
        print(
            f"| {n:,} | {row['seconds']:.2f} s ({row['low']:.2f}-{row['high']:.2f}) "
            f"| {row['cpu']:.2f} s | {row['rss'] / 2**20:.0f} MB "
            f"| {row['seconds'] / n * 1e3:.3f} ms, {row['rss'] / n / 1024:.1f} KB | {slope} |"
        )
        previous = row
    if arguments.status:
        print("\n| N | status --json, server running | without a server |")
        print("|---|---|---|")
        for row in rows:
            print(f"| {row['n']:,} | {row['status_server']:.2f} s | {row['status_alone']:.2f} s |")
    if arguments.phases:
        print("\n| N | twistd's first line (CPU) | control socket (CPU) |")
        print("|---|---|---|")
        for row in rows:
            print(
                f"| {row['n']:,} | {row['first_line']:.2f} s ({row['first_line_cpu']:.2f} s) "
                f"| {row['control']:.2f} s ({row['control_cpu']:.2f} s) |"
            )
    path = os.path.join(arguments.workdir, f"twistd-scale{'-cold' if arguments.cold else ''}.png")
    plot(rows, path, arguments.cold)
    print(f"\nPlot: {path}")


if __name__ == "__main__":
    main()
