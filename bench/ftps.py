"""
The FTPS benchmark of issue 15, one command that prints Markdown tables:

  (a) the transfer rate of a large file over PROT P, download and upload,
      this resource's FTPS service in C{twistd -n lets-encrypt} against
      Debian's vsftpd, with the same curl, ciphers, certificate and file
      (C{ftpsrate.py});
  (b) many concurrent FTPS sessions downloading a small file while the
      service's certificate is renewed: failed transfers and the longest
      reactor stall of the server (C{ftpssessions.py}).

Both parts run against one fresh pebble on loopback.  Progress goes to
standard error.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import BENCH, freePort, summary
from ftpsrate import (
    CIPHERS,
    NAME,
    PASSWORD,
    PYSPY,
    USER,
    measureRates,
    resourceSection,
    writeUsers,
)
from ftpssessions import SERVICE_SECTION, Load, runSessions
from pebblectl import Pebble


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadAverage() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _range(values: dict[str, float], digits: int = 1) -> str:
    if not values["n"]:
        return "n/a"
    return f"{values['median']:.{digits}f} ({values['min']:.{digits}f}–{values['max']:.{digits}f})"


def rateTable(rows: list[dict[str, Any]], missing: str | None, sizeMiB: int) -> str:
    """
    Part (a)'s table: one line per direction and TLS variant.
    """
    lines = [
        f"### FTPS transfer rate, {sizeMiB} MiB over PROT P (MiB/s, median (min–max))",
        "",
        "| transfer | TLS | ours MiB/s | vsftpd MiB/s | ours/vsftpd | server CPU s/GiB ours | "
        "server CPU s/GiB vsftpd |",
        "|---|---|---|---|---|---|---|",
    ]
    errors = []
    for direction in ("download", "upload"):
        for tls in CIPHERS:
            mine = [r for r in rows if r["direction"] == direction and r["tls"] == tls]
            rates: dict[str, dict[int, float]] = {"ours": {}, "vsftpd": {}}
            cpu: dict[str, list[float]] = {"ours": [], "vsftpd": []}
            for row in mine:
                if "error" in row:
                    errors.append(f"{row['server']} {direction} {tls}: {row['error']}")
                    continue
                rates[row["server"]][row["repeat"]] = row["bytes"] / (1 << 20) / row["seconds"]
                cpu[row["server"]].append(row["server_cpu"] / (row["bytes"] / (1 << 30)))
            ratios = [
                rates["ours"][repeat] / rates["vsftpd"][repeat]
                for repeat in rates["ours"]
                if repeat in rates["vsftpd"]
            ]
            failed = sum(1 for r in mine if r["server"] == "vsftpd" and "error" in r)
            vsftpd = _range(summary(rates["vsftpd"].values()))
            if failed:
                vsftpd += f", {failed} failed" if rates["vsftpd"] else " (every one failed)"
            lines.append(
                f"| {direction} | {tls} | {_range(summary(rates['ours'].values()))} | "
                f"{vsftpd if missing is None else 'not run'} | "
                f"{_range(summary(ratios), 2)} | {_range(summary(cpu['ours']), 2)} | "
                f"{_range(summary(cpu['vsftpd']), 2)} |"
            )
    lines.append("")
    if missing is not None:
        lines.append(f"vsftpd not run: {missing}.")
    lines.extend(f"- failed: {error}" for error in sorted(set(errors)))
    return "\n".join(lines)


def sessionsTable(result: dict[str, Any], arguments: argparse.Namespace) -> str:
    """
    Part (b)'s table.
    """
    load, server = result["load"], result["server"]
    renewed = ", ".join(f"{r['outcome']} in {r['seconds']:.2f} s" for r in result["renewals"])
    rows = [
        ("sessions, concurrent", f"{arguments.sessions}"),
        (
            "each session",
            f"{arguments.downloads_per_session} downloads of {arguments.small_kib} KiB, "
            f"{arguments.pace:g} s apart, then a new session",
        ),
        ("load duration", f"{load['seconds']:.1f} s"),
        ("renewals (forced, during the load)", renewed or "none"),
        (
            "sessions started, by certificate presented (first seen first)",
            " + ".join(str(n) for n in load["sessions_by_certificate"]),
        ),
        ("sessions that failed to start", str(load["failed_sessions"])),
        ("transfers completed", str(load["transfers"])),
        ("**failed transfers** (target 0)", str(load["failed_transfers"])),
        ("transfers/s", f"{load['transfers_per_second']:.0f}"),
        (
            "transfer time p50 / p99 / max",
            f"{load['latency_p50_ms']:.0f} / {load['latency_p99_ms']:.0f} / "
            f"{load['latency_max_ms']:.0f} ms",
        ),
        ("**longest reactor stall** (target < 50 ms)", f"{server['max_stall_ms']:.1f} ms"),
        (
            "longest reactor stall before the load (no session: this machine's share)",
            f"{result['baseline']['max_stall_ms']:.1f} ms",
        ),
        (
            "longest reactor work between two ticks, CPU time of its thread "
            "(the stall on a machine of its own)",
            f"{server['max_busy_ms']:.1f} ms (before the load: "
            f"{result['baseline']['max_busy_ms']:.1f} ms)",
        ),
        (
            "garbage collections during the load: count / longest, wall (generation) / "
            "longest, CPU / over 10 ms of CPU / total CPU",
            f"{server['gc_count']} / {server['gc_longest_ms']:.1f} ms "
            f"({server['gc_longest_generation']}) / {server['gc_longest_cpu_ms']:.1f} ms / "
            f"{server['gc_over_10ms']} / {server['gc_total_cpu_ms']:.0f} ms",
        ),
        (
            "objects the garbage collector tracks, before the load / after it (frozen)",
            f"{result['baseline']['gc_tracked']} / {server['gc_tracked']} ({server['gc_frozen']})",
        ),
        (
            "reactor lateness p99 / p99.9",
            f"{server['p99_lateness_ms']:.1f} / {server['p999_lateness_ms']:.1f} ms",
        ),
        (
            "stalls over 20 ms / over 50 ms",
            f"{server['stalls_over_20ms']} / {server['stalls_over_50ms']}",
        ),
        (
            "server CPU during the load: process / reactor thread",
            f"{server['cpu_seconds']:.1f} s / {server['reactor_cpu_seconds']:.1f} s",
        ),
        ("client CPU during the load (threads)", f"{load['cpu_seconds']:.1f} s"),
    ]
    lines = [
        f"### {arguments.sessions} FTPS sessions while the certificate is renewed",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    lines.extend(f"- error ×{count}: {text}" for text, count in load["errors"].items())
    for stall in server["longest"][:3]:
        where = "; ".join(f"{frame} ×{n}" for frame, n in stall["ours"] + stall["innermost"])
        lines.append(f"- stall of {stall['length_ms']} ms at {stall['at_s']} s: {where}")
    return "\n".join(lines)


def sessions(pebble: Pebble, work: str, arguments: argparse.Namespace) -> dict[str, Any]:
    """
    Part (b): the server in a worker, the sessions in this process.
    """
    served = os.path.join(work, "ftp")
    os.makedirs(os.path.join(served, USER))
    content = os.urandom(arguments.small_kib << 10)
    with open(os.path.join(served, USER, "small.bin"), "wb") as stream:
        stream.write(content)
    usersFile = writeUsers(work)
    port = freePort()
    configuration = os.path.join(work, "server.ini")
    with open(configuration, "w") as stream:
        stream.write(
            resourceSection(pebble, work)
            + SERVICE_SECTION.format(
                port=port,
                path=served,
                usersFile=usersFile,
                name=NAME,
                # Room for the sessions that end while others start.
                maxSessions=arguments.sessions * 2,
            )
        )
    load = Load(
        port,
        pebble.rootFile,
        NAME,
        (USER, PASSWORD),
        "small.bin",
        content,
        arguments.sessions,
        arguments.downloads_per_session,
        arguments.pace,
    )
    return runSessions(
        configuration,
        NAME,
        os.path.join(work, "server.log"),
        load,
        arguments.renewals,
        arguments.settle,
        progress,
    )


def profileSummary(raw: str) -> str:
    """
    Where twistd's reactor thread spent its time during part (a), from
    py-spy's raw stacks (kept in C{bench/results/}).
    """
    from profile import summarise

    results = os.path.join(BENCH, "results")
    os.makedirs(results, exist_ok=True)
    kept = os.path.join(results, time.strftime("ftps-profile-%Y%m%d-%H%M%S.txt"))
    shutil.copy(raw, kept)
    with open(raw) as stream:
        text = summarise(stream.read(), top=12)
    return (
        f"Profile of twistd during (a), ours and vsftpd's transfers alike (raw: {kept}); "
        f"its rates above are slowed by the sampling:\n\n```\n{text}\n```"
    )


def parseArguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--parts", default="rate,sessions", help="rate, sessions or both")
    parser.add_argument("--size-mib", type=int, default=256, help="(a) the file's size")
    parser.add_argument("--repeats", type=int, default=3, help="(a) transfers of each kind")
    parser.add_argument("--sessions", type=int, default=200, help="(b) concurrent sessions")
    parser.add_argument("--small-kib", type=int, default=16, help="(b) the small file's size")
    parser.add_argument(
        "--downloads-per-session", type=int, default=5, help="(b) before a session quits"
    )
    parser.add_argument(
        "--pace", type=float, default=5.0, help="(b) seconds between a session's downloads"
    )
    parser.add_argument("--renewals", type=int, default=3, help="(b) forced renewals")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="(b) seconds of load before, between, after"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="(a) profile twistd with py-spy (bench/.venv) during the transfers",
    )
    parser.add_argument("--py-spy", default=PYSPY, help="(a) the py-spy of --profile")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    arguments = parseArguments(argv)
    parts = set(arguments.parts.split(","))
    if arguments.profile and not os.access(arguments.py_spy, os.X_OK):
        raise SystemExit(
            "py-spy is missing: python3 -m venv bench/.venv && bench/.venv/bin/pip install py-spy"
        )
    # Nothing the bench writes (configuration, accounts, logs, keys) is
    # readable by other local users; its work folder only lets vsftpd's
    # anonymous sessions through to the served folder.
    os.umask(0o077)
    work = tempfile.mkdtemp(prefix="ftpsbench-")
    os.chmod(work, 0o711)
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    header = [
        f"Command: `{' '.join(['python', 'bench/ftps.py', *(argv or sys.argv[1:])])}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; load average before: "
        f"{loadAverage()}; {curl.splitlines()[0] if curl else 'curl missing'}",
    ]
    tables = []
    try:
        pebbleWork = os.path.join(work, "pebble")
        with Pebble.start(pebbleWork, freePort()) as pebble:
            if "rate" in parts:
                progress(f"(a) transfer rate, {arguments.size_mib} MiB × {arguments.repeats}")
                rateWork = os.path.join(work, "rate")
                os.makedirs(rateWork)
                spy = os.path.join(work, "ftps-profile.txt") if arguments.profile else None
                rows, missing = measureRates(
                    pebble,
                    rateWork,
                    arguments.size_mib,
                    arguments.repeats,
                    progress,
                    None if spy is None else (arguments.py_spy, spy),
                )
                tables.append(rateTable(rows, missing, arguments.size_mib))
                if spy is not None:
                    tables.append(profileSummary(spy))
                tables.append(f"Load average after (a): {loadAverage()}")
            if "sessions" in parts:
                progress(f"(b) {arguments.sessions} sessions, {arguments.renewals} renewals")
                sessionWork = os.path.join(work, "sessions")
                os.makedirs(sessionWork)
                tables.append(sessionsTable(sessions(pebble, sessionWork, arguments), arguments))
                tables.append(f"Load average after (b): {loadAverage()}")
    finally:
        if arguments.keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\n\n".join(["\n".join(header), *tables]))


if __name__ == "__main__":
    main()
