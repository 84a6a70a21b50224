"""
The cluster benchmark of issue 14, in one command:

    .venv/bin/python bench/cluster.py                    # 3 nodes, 50 sets, 100 renewals
    .venv/bin/python bench/cluster.py --renewals 20 --idle-seconds 60
    .venv/bin/python bench/cluster.py --scenarios rolling,kill,dbdown,sigstop

N C{twistd -n lets-encrypt} nodes (letsencrypt_resource.testing.cluster)
share one PostgreSQL (letsencrypt_resource.testing.postgres) behind a real
HAProxy, in front of a fresh pebble whose HTTP-01 validation goes through
HAProxy.  It measures, and prints as a Markdown table:

  - cold start: orders and accounts at pebble (from its log), and the time
    from starting the nodes until every node presents every set's
    certificate (a real handshake, chain and name verified);
  - propagation: K forced renewals (C{renew --force} on each node in turn);
    for each, from the change's commit in the database (its
    C{letsencrypt_changes.at}) until every node presents the new
    certificate, p50 and p99;
  - idle cost: transactions committed in the database per node per minute
    while nothing is due (C{pg_stat_database} deltas, the benchmark's own
    reads taken out);
  - scenarios (C{--scenarios}): C{rolling} restarts every node in turn
    while a client does handshakes through HAProxy, counting the failed
    ones; C{kill} SIGKILLs the holder of an order's lease during each of
    C{--kills} forced renewals and checks every set is served after;
    C{dbdown} stops PostgreSQL during renewals; C{sigstop} pauses a lease
    holder past its lease while another node renews (see bench/README.md).

Without the cluster options in the product (C{cluster_database}...), or
with C{--independent}, the nodes run without a database: only the cold
start is measured, and only one node makes sense (a validation reaching
another node fails).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (puts the checkout first on sys.path)
import psycopg  # noqa: E402
from pebblectl import Pebble  # noqa: E402

from letsencrypt_resource.testing import postgres  # noqa: E402
from letsencrypt_resource.testing.cluster import (  # noqa: E402
    Cluster,
    Node,
    Shared,
    clusterOptionsKnown,
    pebbleCounts,
    peerCertificate,
    writeKeyFile,
)

#: The certificates' lifetime at pebble, in seconds: a Let's Encrypt one's
#: (a node refuses pebble's default of five years from another node).
LIFETIME = 90 * 86400
#: Seconds a cold start may take.
COLD_TIMEOUT = 600.0
#: Seconds one renewal may take to reach every node.
RENEWAL_TIMEOUT = 60.0
#: The transactions one reading of the statistics adds: its connection's
#: start-up and its query.
OWN_TRANSACTIONS = 2
#: Seconds between two handshakes of one poller: the resolution of the
#: propagation figures is about this plus one handshake.
POLL_PAUSE = 0.002


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def domainSets(count: int) -> list[tuple[str, ...]]:
    """
    C{count} sets of two names each under example.test.
    """
    return [(f"set{i:03d}.example.test", f"www.set{i:03d}.example.test") for i in range(count)]


class Database:
    """
    The cluster's schema in the benchmark's PostgreSQL, read with a
    connection of the benchmark's own.
    """

    def __init__(self) -> None:
        self.server = postgres.server()
        self.schema = self.server.newSchema()
        self.conninfo = self.server.conninfo(self.schema)
        self.connection = psycopg.connect(self.conninfo, autocommit=True)

    def newestChange(self) -> int:
        row = self.connection.execute(
            "SELECT coalesce(max(id), 0) FROM letsencrypt_changes"
        ).fetchone()
        assert row is not None
        return int(row[0])

    def certificateCommitted(self, after: int) -> float | None:
        """
        The time (epoch seconds) of the first change after C{after} to a
        key under C{certificates/}, or C{None}.
        """
        rows = self.connection.execute(
            "SELECT key, extract(epoch FROM at) FROM letsencrypt_changes WHERE id > %s ORDER BY id",
            (after,),
        ).fetchall()
        for key, at in rows:
            if bytes(key).startswith(b"certificates/"):
                return float(at)
        return None

    def transactions(self) -> int:
        """
        Transactions committed or rolled back in the database so far, read
        on a connection of its own: a session's counts reach
        C{pg_stat_database} at the latest when it closes, and this one
        adds L{OWN_TRANSACTIONS} to the next reading.
        """
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            row = connection.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
        assert row is not None
        return int(row[0])

    def newestToken(self) -> int:
        """
        The newest fencing token of any lease, held or not.
        """
        row = self.connection.execute("SELECT coalesce(max(token), 0) FROM letsencrypt_leases")
        found = row.fetchone()
        assert found is not None
        return int(found[0])

    def leases(self) -> list[tuple[str, int, float]]:
        """
        The leases that have not expired: holder, token and seconds left.
        """
        rows = self.connection.execute(
            "SELECT holder, token, extract(epoch FROM expires_at - now()) "
            "FROM letsencrypt_leases WHERE expires_at > now()"
        ).fetchall()
        return [(holder, int(token), float(left)) for holder, token, left in rows if holder]


def renew(cluster: Cluster, nodeIndex: int, setIndex: int) -> subprocess.Popen[bytes]:
    """
    Start C{renew --force} of one set through node C{nodeIndex}'s control
    socket.
    """
    node = cluster.nodes[nodeIndex]
    command = [sys.executable, "-m", "letsencrypt_resource", "--config", node.configPath]
    command += ["renew", "--force", cluster.domainSets[setIndex][0]]
    env = {**os.environ, "PYTHONPATH": common.ROOT}
    return subprocess.Popen(
        command, cwd=node.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(process: subprocess.Popen[bytes]) -> tuple[bool, str]:
    """
    Wait for a C{renew} command, killed if it takes longer than
    L{RENEWAL_TIMEOUT}.

    @return: Whether it succeeded, and the end of its output.
    """
    try:
        output: bytes = process.communicate(timeout=RENEWAL_TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        output = process.communicate()[0] + b" (killed: too long)"
    return process.returncode == 0, output.decode(errors="replace")[-300:]


def watchNewSerial(
    cluster: Cluster, root: bytes, nodeIndex: int, setIndex: int, old: int, seen: dict[int, float]
) -> threading.Thread:
    """
    A thread doing handshakes with one node until it presents a serial
    other than C{old}, then noting the time in C{seen}.
    """

    def poll() -> None:
        deadline = time.monotonic() + RENEWAL_TIMEOUT
        while time.monotonic() < deadline:
            certificate = cluster.served(root, nodeIndex, setIndex)
            if certificate is not None and certificate.serial_number != old:
                seen[nodeIndex] = time.time()
                return
            time.sleep(POLL_PAUSE)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread


def propagation(
    cluster: Cluster, database: Database, root: bytes, serials: dict[tuple[int, int], int], k: int
) -> dict[str, Any]:
    """
    K forced renewals, each set and node in turn; the seconds from each
    commit until every node presents the new certificate.
    """
    current = {s: serials[0, s] for s in range(len(cluster.domainSets))}
    delays: list[float] = []
    failures = 0
    for renewal in range(k):
        setIndex, nodeIndex = renewal % len(cluster.domainSets), renewal % cluster.count
        before = database.newestChange()
        seen: dict[int, float] = {}
        threads = [
            watchNewSerial(cluster, root, n, setIndex, current[setIndex], seen)
            for n in range(cluster.count)
        ]
        process = renew(cluster, nodeIndex, setIndex)
        succeeded, output = finish(process)
        for thread in threads:
            thread.join()
        committed = database.certificateCommitted(before)
        served = cluster.served(root, 0, setIndex)
        if served is not None:
            current[setIndex] = served.serial_number
        if not succeeded or committed is None or len(seen) < cluster.count:
            failures += 1
            log(f"  renewal {renewal}: failed ({output})")
            continue
        delays.append(max(seen.values()) - committed)
        if renewal % 10 == 9:
            log(f"  {renewal + 1} renewals, last {delays[-1] * 1000:.0f} ms")
    return {
        "renewals": k,
        "failed": failures,
        "p50": common.percentile(delays, 0.5),
        "p99": common.percentile(delays, 0.99),
        "max": max(delays, default=float("nan")),
    }


def idleCost(database: Database, nodes: int, seconds: float) -> float:
    """
    Transactions per node per minute over C{seconds} of idleness.

    The benchmark's own connection is closed first, so that its counts are
    in before the first reading; the nodes' sessions report theirs within
    a second of a transaction, or 10 s when idle, which blurs the edges of
    the window by a few transactions.
    """
    database.connection.close()
    time.sleep(1)
    first = database.transactions()
    time.sleep(seconds)
    delta = database.transactions() - first - OWN_TRANSACTIONS
    database.connection = psycopg.connect(database.conninfo, autocommit=True)
    return delta / nodes / (seconds / 60)


class Hammer:
    """
    Handshakes through HAProxy, back to back, over every set, counting
    those that fail.
    """

    def __init__(self, cluster: Cluster, root: bytes) -> None:
        self.cluster, self.root = cluster, root
        self.done = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            setIndex = index % len(self.cluster.domainSets)
            port = self.cluster.balancedPort(setIndex)
            if peerCertificate(port, self.cluster.domainSets[setIndex][0], self.root) is None:
                self.failed += 1
                log(f"  handshake {self.done} through set{setIndex} failed at {time.time():.3f}")
            self.done += 1
            index += 1
            time.sleep(POLL_PAUSE)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


#: Seconds between taking a node out of the balancer and stopping it: its
#: connections in flight end (the handshakes take milliseconds).
DRAIN_NOTICE = 0.5


def rolling(
    cluster: Cluster, database: Database | None, root: bytes, args: argparse.Namespace
) -> str:
    """
    C{--rolling-rounds} times, restart every node in turn (SIGTERM, start,
    until it serves every set) while a client does handshakes through
    HAProxy.
    """
    hammer = Hammer(cluster, root)
    started = time.monotonic()
    try:
        for _ in range(args.rolling_rounds):
            for node in cluster.nodes:
                if args.drain_first:
                    # The operator's procedure: the balancer sends the node
                    # nothing new (its TLS servers track the challenge one)
                    # before it stops, and takes it back once it serves.
                    cluster.balancer.setEnabled("challenge", node.index, False)
                    time.sleep(DRAIN_NOTICE)
                node.stop()
                node.start()
                cluster.waitUntilServed(root, COLD_TIMEOUT, [node.index])
                if args.drain_first:
                    cluster.balancer.setEnabled("challenge", node.index, True)
    finally:
        hammer.stop()
    return (
        f"{hammer.failed} failed of {hammer.done} handshakes through HAProxy, "
        f"{args.rolling_rounds} rounds of {cluster.count} restarts"
        f"{', each node taken out of the balancer first' if args.drain_first else ''}, "
        f"{time.monotonic() - started:.1f} s"
    )


def holderPid(holder: str) -> int | None:
    """
    The process id in a lease holder's name (C{host:pid:random}).
    """
    parts = holder.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def leaseHolder(
    cluster: Cluster, database: Database, process: subprocess.Popen[bytes]
) -> tuple[Node | None, int, float]:
    """
    Wait, while C{process} runs, until a node holds a lease.

    @return: That node, its lease's token and the seconds it has left;
        C{(None, 0, 0.0)} when none was seen.
    """
    deadline = time.monotonic() + RENEWAL_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        for holder, token, left in database.leases():
            node = next((n for n in cluster.nodes if n.pid == holderPid(holder)), None)
            if node is not None:
                return node, token, left
        time.sleep(POLL_PAUSE)
    return None, 0, 0.0


def kill(cluster: Cluster, database: Database, root: bytes, args: argparse.Namespace) -> str:
    """
    C{--kills} times: force a renewal, SIGKILL the node holding its lease
    as soon as one is held, start it again; then check that every node
    serves every set.
    """
    killed = 0
    hammer = Hammer(cluster, root)
    try:
        for round in range(args.kills):
            setIndex = round % len(cluster.domainSets)
            nodeIndex = round % cluster.count
            process = renew(cluster, nodeIndex, setIndex)
            victim, _, _ = leaseHolder(cluster, database, process)
            if victim is not None:
                victim.signal(signal.SIGKILL)
                victim.stop()
                victim.start()
                killed += 1
            finish(process)
        cluster.waitUntilServed(root, COLD_TIMEOUT)
    finally:
        hammer.stop()
    counts = pebbleCounts(os.path.join(args.pebbleDirectory, "pebble.log"))
    return (
        f"{killed} of {args.kills} lease holders killed; every set served after; "
        f"pebble orders so far {counts.orders}; "
        f"{hammer.failed} failed of {hammer.done} handshakes through HAProxy"
    )


def newSerials(cluster: Cluster, root: bytes, sets: list[int], old: dict[int, int]) -> bool:
    """
    Whether every node presents, for each of C{sets}, a certificate other
    than the one whose serial C{old} holds, the same on every node.
    """
    for setIndex in sets:
        served = [cluster.served(root, n, setIndex) for n in range(cluster.count)]
        serials = {c.serial_number if c is not None else None for c in served}
        if len(serials) != 1 or None in serials or old[setIndex] in serials:
            return False
    return True


def renewUntilDone(cluster: Cluster, sets: list[int], deadline: float) -> tuple[int, int]:
    """
    Force a renewal of each of C{sets} through its node, asked again a
    second later while it fails, until C{deadline} (a C{time.monotonic}
    time).

    @return: How many completed, and how many renewals were asked.
    """
    left, tries = list(sets), 0
    while left:
        tries += len(left)
        asked = [(s, renew(cluster, s % cluster.count, s)) for s in left]
        left = [s for s, process in asked if not finish(process)[0]]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return len(sets) - len(left), tries


def databaseDown(
    cluster: Cluster, database: Database, root: bytes, args: argparse.Namespace
) -> str:
    """
    A forced renewal of one set through each node, PostgreSQL stopped
    right after for C{--db-down-seconds}, then another set through each
    node once it has stopped, while a client does handshakes
    through HAProxy; once it is back, the nodes must carry those renewals
    out by themselves (a forced renewal refused for want of the database
    stays asked for) and every node serve the new certificates, without a
    restart; the renewals still not done after C{--recovery-seconds} are
    asked again.
    """
    sets = list(range(min(2 * cluster.count, len(cluster.domainSets))))
    before, after = sets[: len(sets) // 2], sets[len(sets) // 2 :]
    old = {s: cluster.served(root, 0, s).serial_number for s in sets}  # type: ignore[union-attr]
    hammer = Hammer(cluster, root)
    try:
        # Half the renewals are asked as the database stops, half once it
        # has stopped.
        during = [renew(cluster, s % cluster.count, s) for s in before]
        database.connection.close()
        database.server.halt()
        during += [renew(cluster, s % cluster.count, s) for s in after]
        time.sleep(args.db_down_seconds)
        failedDuring = sum(not finish(process)[0] for process in during)
        outage = (hammer.failed, hammer.done)
        database.server.resume()
        back = time.monotonic()
        database.connection = psycopg.connect(database.conninfo, autocommit=True)
        recovered = newSerials(cluster, root, sets, old)
        while not recovered and time.monotonic() - back < args.recovery_seconds:
            time.sleep(0.05)
            recovered = newSerials(cluster, root, sets, old)
        waited = time.monotonic() - back
        byThemselves = recovered
        completed, tries = len(sets), 0
        if not recovered:
            completed, tries = renewUntilDone(cluster, sets, time.monotonic() + 60)
            recovered = newSerials(cluster, root, sets, old)
            waited = time.monotonic() - back
    finally:
        hammer.stop()
    after = (
        f"every node on the new certificates {waited:.1f} s after the database was back"
        if recovered
        else f"NOT every node on new certificates {waited:.0f} s after the database was back"
    )
    how = (
        "the nodes renewed by themselves, nothing asked again"
        if byThemselves
        else f"{completed} of {len(sets)} completed once asked again ({tries} asks)"
    )
    return (
        f"{outage[0]} failed of {outage[1]} handshakes through HAProxy during "
        f"{args.db_down_seconds:.0f} s down; {failedDuring} of {len(sets)} renewals "
        f"asked failed meanwhile; after: {how}; {after} "
        f"({hammer.failed} failed handshakes in all)"
    )


def paused(cluster: Cluster, database: Database, root: bytes, args: argparse.Namespace) -> str:
    """
    A forced renewal through one node; as soon as a node holds its lease,
    SIGSTOP that node past the lease's end, renew the set through another
    node meanwhile, then SIGCONT it: every node must end on the other
    node's certificate (the paused node's late writes refused by the
    fencing token), and stay on it for C{--settle-seconds}.
    """
    setIndex = 0
    first = renew(cluster, 0, setIndex)
    holder, token, left = leaseHolder(cluster, database, first)
    if holder is None:
        finish(first)
        return "no node was seen holding a lease: the renewal ended first"
    holder.signal(signal.SIGSTOP)
    time.sleep(left + 1)
    other = next(n for n in cluster.nodes if n is not holder)
    second = renew(cluster, other.index, setIndex)
    secondDone = finish(second)[0]
    newest = database.newestToken()
    winner = cluster.served(root, other.index, setIndex)
    logged = len(holder.log())
    holder.signal(signal.SIGCONT)
    finish(first)
    deadline = time.monotonic() + args.settle_seconds
    kept = winner is not None
    while kept and time.monotonic() < deadline:
        presented = [cluster.served(root, n, setIndex) for n in range(cluster.count)]
        kept = all(c is not None and c.serial_number == winner.serial_number for c in presented)  # type: ignore[union-attr]
        time.sleep(0.1)
    late = holder.log()[logged:]
    refusals = {event: late.count(f"] {event} ") for event in REFUSALS}
    return (
        f"{holder.name} paused {left + 1:.1f} s holding token {token}; the renewal through "
        f"{other.name} {'completed' if secondDone else 'FAILED'} (newest token {newest}); "
        f"after SIGCONT every node {'kept' if kept else 'did NOT keep'} its certificate "
        f"for {args.settle_seconds:.0f} s; the paused node then logged "
        + ", ".join(f"{count} x event {event}" for event, count in refusals.items())
    )


#: What a node logs when the fencing token refuses its late work: its lease
#: lost, a write refused for a newer token, its order abandoned before
#: finalizing, its certificate not stored, its lease not released.
REFUSALS = ("20218", "20189", "20200", "20201", "20202")

#: The scenarios implemented, by name.
SCENARIOS: dict[str, Callable[[Cluster, Any, bytes, argparse.Namespace], str]] = {
    "rolling": rolling,
    "kill": kill,
    "dbdown": databaseDown,
    "sigstop": paused,
}
#: The scenarios that need no database.
WITHOUT_DATABASE = {"rolling"}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--sets", type=int, default=50)
    parser.add_argument("--renewals", type=int, default=100, help="K, for propagation")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--key-type", default="ecdsa-p256")
    parser.add_argument(
        "--scenarios", default="", help=f"comma-separated, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--rolling-rounds", type=int, default=1, help="for rolling: restarts of every node"
    )
    parser.add_argument(
        "--drain-first",
        action="store_true",
        help="for rolling: take each node out of HAProxy (runtime API) before it stops",
    )
    parser.add_argument("--kills", type=int, default=20, help="for the kill scenario")
    parser.add_argument("--db-down-seconds", type=float, default=60.0, help="for dbdown")
    parser.add_argument(
        "--recovery-seconds",
        type=float,
        default=120.0,
        help="for dbdown: how long the renewals may take once the database is back",
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=10.0, help="for sigstop: watched after SIGCONT"
    )
    parser.add_argument(
        "--va-sleep",
        type=int,
        default=None,
        help="pebble waits a random time below this many seconds before each validation "
        "(for sigstop: orders long enough to pause their lease holder)",
    )
    parser.add_argument(
        "--independent", action="store_true", help="no database: cold start only (use --nodes 1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.independent and set(args.scenarios) - WITHOUT_DATABASE:
        parser.error("those scenarios need the cluster's database: drop --independent")
    if not args.independent and not clusterOptionsKnown():
        parser.error(
            "the lets-encrypt resource does not declare cluster_database yet: "
            "run with --independent --nodes 1 to check the harness"
        )
    return args


def main() -> None:
    args = arguments()
    # Stopped with SIGTERM (as by timeout(1)), stop the nodes, HAProxy and
    # PostgreSQL too: the finally clause below and atexit run on SystemExit.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    work = tempfile.mkdtemp(prefix="le-bench-cluster-")
    cluster = Cluster(os.path.join(work, "cluster"), domainSets(args.sets), args.nodes)
    rows: list[tuple[str, str]] = []
    try:
        cluster.startBalancer()
        with Pebble.start(
            os.path.join(work, "pebble"), cluster.challengePort, LIFETIME, args.va_sleep
        ) as pebble:
            args.pebbleDirectory = pebble.directory
            with open(pebble.rootFile, "rb") as stream:
                root = stream.read()
            database = None
            shared = Shared(pebble.directoryURL, pebble.caFile, keyType=args.key_type)
            if not args.independent:
                database = Database()
                key = writeKeyFile(os.path.join(work, "cluster.key"))
                shared = Shared(
                    pebble.directoryURL, pebble.caFile, database.conninfo, key, args.key_type
                )
            log(f"cold start: {args.nodes} nodes, {args.sets} sets")
            started = time.monotonic()
            cluster.startNodes(shared)
            serials = cluster.waitUntilServed(root, COLD_TIMEOUT)
            seconds = time.monotonic() - started
            counts = pebbleCounts(os.path.join(pebble.directory, "pebble.log"))
            rows.append(("cold start: every node serves every set", f"{seconds:.1f} s"))
            rows.append(
                (
                    "cold start: orders, accounts at pebble",
                    f"{counts.orders}, {counts.accounts} (expected {args.sets}, 1)",
                )
            )
            if database is not None:
                log(f"propagation: {args.renewals} renewals")
                figures = propagation(cluster, database, root, serials, args.renewals)
                rows.append(
                    (
                        f"propagation, commit to every node ({figures['renewals']} renewals, "
                        f"{figures['failed']} failed)",
                        f"p50 {figures['p50'] * 1000:.0f} ms, p99 {figures['p99'] * 1000:.0f} ms, "
                        f"max {figures['max'] * 1000:.0f} ms",
                    )
                )
                log(f"idle: {args.idle_seconds:.0f} s")
                rate = idleCost(database, args.nodes, args.idle_seconds)
                rows.append(("idle: transactions per node per minute", f"{rate:.1f}"))
            for name in args.scenarios:
                log(f"scenario {name}")
                rows.append((f"scenario {name}", SCENARIOS[name](cluster, database, root, args)))
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    print(f"| {args.nodes} nodes, {args.sets} sets, {args.key_type} | |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
