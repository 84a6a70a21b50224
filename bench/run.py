"""
The benchmarks of issue 5, in one command:

    .venv/bin/python bench/run.py --quick     # about 5 minutes (up to 9 when busy)
    .venv/bin/python bench/run.py             # the full run, about 45 minutes
    .venv/bin/python bench/run.py --figures 5 # warm start at scale, no pebble

Every contender runs against its own fresh local pebble (Debian's, started
through letsencrypt_resource.pebble.startTestCA: PEBBLE_VA_NOSLEEP=1, and
nonceReject=0 so no badNonce is injected).  Prints Markdown tables to
stdout and writes bench/results/<timestamp>.csv (one measurement a row)
and bench/results/<timestamp>.md (the tables).  See bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import contenders  # noqa: E402
import warm  # noqa: E402
from common import BENCH, ROOT, freePort, summary  # noqa: E402
from pebblectl import NONCE_REJECT, Pebble, pebbleVersion  # noqa: E402

KEY_TYPES = ("rsa-2048", "ecdsa-p256")
TARGETS = {
    "ratio": 1.3,
    "startup_s": 3.0,
    "rss_mb": 250.0,
    "check_cpu_s": 0.2,
    "stall_ms": 50.0,
    "p99_ms": 10.0,
    "switch_ms": 100.0,
}


class Recorder:
    """
    Collects measurements as rows for the CSV.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, figure: str, variant: str, repeat: int, metrics: dict[str, Any]) -> None:
        for metric, value in metrics.items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value)
            self.rows.append(
                {
                    "figure": figure,
                    "variant": variant,
                    "repeat": repeat,
                    "metric": metric,
                    "value": value,
                }
            )

    def write(self, path: str) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["figure", "variant", "repeat", "metric", "value"])
            writer.writeheader()
            writer.writerows(self.rows)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def withPebble(workdir: str, body: Callable[[Pebble, str], dict[str, Any]]) -> dict[str, Any]:
    """
    Run C{body} against a fresh pebble whose HTTP-01 validator uses a fresh
    challenge port; pebble's start is not timed.
    """
    os.makedirs(workdir, exist_ok=True)
    port = freePort()
    pebble = Pebble.start(os.path.join(workdir, "pebble"), port)
    try:
        return body(pebble, os.path.join(workdir, "run"))
    finally:
        pebble.stop()


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}f}"


def spread(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    s = summary([v * scale for v in values if v is not None])
    if not s["n"]:
        return "n/a"
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


# Figure 1

TWISTD_FROM_START = "twistd, from resource start"


def addRates(result: dict[str, Any], n: int) -> None:
    """
    Add seconds per certificate and certificates per second to C{result}.
    """
    result["seconds_per_certificate"] = result["seconds"] / n
    result["certificates_per_second"] = n / result["seconds"]


def figure1(args: argparse.Namespace, tmp: str, rec: Recorder) -> list[str]:
    results: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for n in args.sizes:
        for keyType in args.key_types:
            for repeat in range(args.repeats):
                for name in args.contenders:
                    if name == "certbot" and repeat >= args.certbot_repeats:
                        continue
                    if name == "uacme" and n >= 200 and repeat >= args.large_external_repeats:
                        continue
                    variant = f"{name} N={n} {keyType}"
                    log(f"figure 1: {variant}, run {repeat + 1}")
                    workdir = os.path.join(tmp, f"f1-{n}-{keyType}-{repeat}-{name}")
                    try:
                        result = withPebble(
                            workdir,
                            contender(name, n, keyType, f"r{repeat}"),
                        )
                    except Exception as error:
                        traceback.print_exc()
                        result = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                    if "seconds" in result and result.get("certificates") != n:
                        result["error"] = f"only {result.get('certificates')} of {n} verified"
                    if "error" not in result and "skipped" not in result:
                        addRates(result, n)
                        log(
                            f"  {result['seconds']:.2f} s, "
                            f"{result['seconds_per_certificate']:.3f} s/cert"
                        )
                    else:
                        log(f"  {result.get('error') or result.get('skipped')}")
                    result["repeat"] = repeat
                    rec.add("1", variant, repeat, result)
                    results.setdefault((n, keyType, name), []).append(result)
                    if name == "twistd" and result.get("startup_seconds") is not None:
                        fromStart = dict(
                            result, seconds=result["seconds"] - result["startup_seconds"]
                        )
                        addRates(fromStart, n)
                        results.setdefault((n, keyType, TWISTD_FROM_START), []).append(fromStart)
    shown = [
        shownName
        for name in args.contenders
        for shownName in ((name, TWISTD_FROM_START) if name == "twistd" else (name,))
    ]
    lines = [
        "### Figure 1: certificates from start to the last one in service",
        "",
        "Median (min–max) over the runs; *vs floor* is the ratio of each run's "
        "time to the floor's time in the same repeat (target: resource ≤ "
        f"{TARGETS['ratio']}x, from resource start, as the floor is timed "
        "after its imports).",
        "",
        "| N | key type | contender | runs | total s | s/cert | certs/s | vs floor | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in args.sizes:
        for keyType in args.key_types:
            floorByRepeat = {
                r["repeat"]: r["seconds"]
                for r in results.get((n, keyType, "floor"), [])
                if "seconds" in r and "error" not in r
            }
            for name in shown:
                runs = results.get((n, keyType, name), [])
                good = [r for r in runs if "seconds" in r and "error" not in r]
                notes = sorted(
                    {
                        r.get("skipped") or r.get("error")
                        for r in runs
                        if "seconds" not in r or "error" in r
                    }
                    - {None}
                )
                ratios = [
                    r["seconds"] / floorByRepeat[r["repeat"]]
                    for r in good
                    if r["repeat"] in floorByRepeat
                ]
                if good and name in (TWISTD_FROM_START, "embedded") and ratios:
                    met = summary(ratios)["median"] <= TARGETS["ratio"]
                    notes.append("target met" if met else "**target missed**")
                if name == "twistd" and good:
                    notes.append("process start-up included")
                for ratio in ratios:
                    rec.add("1", f"{name} N={n} {keyType}", -1, {"ratio_to_floor": ratio})
                lines.append(
                    f"| {n} | {keyType} | {name} | {len(good)} | "
                    f"{spread([r['seconds'] for r in good])} | "
                    f"{spread([r['seconds_per_certificate'] for r in good], 3)} | "
                    f"{spread([r['certificates_per_second'] for r in good], 1)} | "
                    f"{spread(ratios) + 'x' if ratios else 'n/a'} | {'; '.join(notes)} |"
                )
    lines.append("")
    for name in args.contenders:
        lines.append(f"- **{name}**: {contenders.DESCRIPTIONS[name]}")
    startups = [
        r["startup_seconds"]
        for (n, keyType, name), runs in results.items()
        if name == "twistd"
        for r in runs
        if r.get("startup_seconds") is not None
    ]
    if startups:
        lines.append(
            f"- **{TWISTD_FROM_START}**: the same runs, timed from the resource's "
            f"start (event 20151, challenge site listening) instead of the spawn; "
            f"twistd's own start-up before it (interpreter, imports, configuration) "
            f"took {spread(startups)} s over all its runs."
        )
    return lines


def contender(name: str, n: int, keyType: str, run: str) -> Callable[[Pebble, str], Any]:
    """
    The body, for L{withPebble}, of figure 1's contender C{name} for C{n}
    certificates of C{keyType}.
    """
    return lambda pebble, w: contenders.CONTENDERS[name](pebble, w, n, keyType, run)


def embedded(scenario: str, *arguments: str) -> Callable[[Pebble, str], Any]:
    """
    The body, for L{withPebble}, of the embedded scenario C{scenario} with
    C{arguments}.
    """
    return lambda pebble, w: contenders.runEmbedded(scenario, pebble, w, *arguments)


def checkMilliseconds(phase: dict[str, Any]) -> float:
    """
    The CPU milliseconds of one check() in a figure 2 phase, NaN if not measured.
    """
    return (phase.get("check_cpu_seconds") or float("nan")) * 1000


# Figure 2


def figure2(args: argparse.Namespace, tmp: str, rec: Recorder) -> list[str]:
    phases = {
        "cold": [],
        "warm": [],
        "warm, recursion limit 50000 (diagnosis)": ["--recursion-limit", "50000"],
    }
    rows: dict[str, list[dict[str, Any]]] = {phase: [] for phase in phases}
    for repeat in range(args.scale_repeats):
        workdir = os.path.join(tmp, f"f2-{repeat}")
        log(f"figure 2: {args.scale_consumers} consumers, run {repeat + 1}")

        def body(
            pebble: Pebble, w: str, repeat: int = repeat, workdir: str = workdir
        ) -> dict[str, Any]:
            out = {}
            for index, (phase, extra) in enumerate(phases.items()):
                timeout = 3600 if phase == "cold" else args.settle_timeout
                try:
                    out[phase] = contenders.runEmbedded(
                        "scale",
                        pebble,
                        w,
                        "--n",
                        str(args.scale_consumers),
                        "--key-type",
                        "ecdsa-p256",
                        "--run",
                        f"r{repeat}",
                        # The cold run issues every certificate: no limit.
                        "--settle-timeout",
                        str(timeout),
                        "--log-file",
                        os.path.join(workdir, f"scale-{index}.log"),
                        *extra,
                        timeout=timeout + 30,
                    )
                except Exception as error:
                    log(f"  {phase}: failed: {str(error)[:500]}")
                    if phase == "cold":
                        break
                    continue
                log(
                    f"  {phase}: in service {fmt(out[phase]['in_service_seconds'])} s, "
                    f"settled {fmt(out[phase]['settled_seconds'], 1)} s, "
                    f"RSS {out[phase]['rss_bytes'] / 2**20:.0f} MB, "
                    f"check {fmt(checkMilliseconds(out[phase]), 1)} ms CPU"
                    + (
                        " (worker wedged, killed)"
                        if out[phase].get("worker_hung_after_result")
                        else ""
                    )
                )
            return out

        try:
            out = withPebble(workdir, body)
        except Exception as error:
            traceback.print_exc()
            log(f"  failed: {error}")
            continue
        for phase, result in out.items():
            rec.add("2", f"{phase} {args.scale_consumers}", repeat, result)
            rows[phase].append(result)
    m = args.scale_consumers
    lines = [
        f"### Figure 2: scale, {m} consumers registered through the public API",
        "",
        "TLSCertificateConsumers in a component registry, LetsEncryptResource with a "
        "DirectoryStorage, ECDSA P-256. *cold*: empty state directory (every consumer "
        "first gets a provisional certificate, then the resource orders all "
        f"{m} from pebble); *warm*: a new process on the state directory the cold "
        "run filled (every certificate stored and valid).",
        "",
        "| phase | runs | start-up until all in service, s | CPU of that, s | until settled, s "
        "| CA-issued | orders | RSS after, MB | one check() CPU, ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in phases:
        r = rows[phase]
        stuck = [x for x in r if not x.get("settled", True)]
        wedged = [x for x in stuck if x.get("stage") == "in service"]
        settledText = spread([x["settled_seconds"] for x in r if x.get("settled", True)], 1)
        if wedged:
            settledText = (
                f"**never** in {len(stuck)} of {len(r)} runs: whenSettled() did not "
                f"fire and the worker did not finish within {args.settle_timeout + 30:g} s "
                "(its reactor still ran); killed"
            )
        elif stuck:
            settledText = (
                f"**never** in {len(stuck)} of {len(r)} runs "
                f"({stuck[0].get('attempts_still_pending')} attempts stuck after "
                f"{args.settle_timeout:g} s)"
            )
        lines.append(
            f"| {phase} | {len(r)} | {spread([x['in_service_seconds'] for x in r])} | "
            f"{spread([x['in_service_cpu_seconds'] for x in r])} | "
            f"{settledText} | "
            f"{spread([x.get('ca_issued') for x in r], 0)} | "
            f"{spread([x.get('orders_20155') for x in r], 0)} | "
            f"{spread([x['rss_bytes'] for x in r], 0, 2**-20)} | "
            f"{spread([x.get('check_cpu_seconds') for x in r], 1, 1000)} |"
        )
    return lines


# Figure 5


def figure5(args: argparse.Namespace, tmp: str, rec: Recorder) -> list[str]:
    """
    Warm start on N stored certificates, without pebble (L{warm}): the
    fabricated state directories are kept in bench/results.
    """
    options = argparse.Namespace(
        workdir=os.path.join(BENCH, "results"), top=0, contexts=False, probe=True
    )
    results: dict[int, list[dict[str, Any]]] = {}
    for n in args.warm_sizes:
        for repeat in range(args.scale_repeats):
            log(f"figure 5: warm start on {n} stored certificates, run {repeat + 1}")
            result = warm.measure(options, n, None)
            rec.add("5", str(n), repeat, result)
            results.setdefault(n, []).append(result)
    return [
        "### Figure 5: warm start on N stored certificates (bench/warm.py)",
        "",
        "N one-name ECDSA certificates and their renewal states, fabricated by a local CA; "
        "TLSCertificateConsumers and a LetsEncryptResource on a DirectoryStorage, no ACME "
        "server; median (min-max) of the wall time.",
        "",
        warm.table(results),
    ]


# Figure 3


def figure3(args: argparse.Namespace, tmp: str, rec: Recorder) -> list[str]:
    results: dict[str, list[dict[str, Any]]] = {}
    variants = [(kt, load) for kt in args.stall_key_types for load in args.loads]
    for repeat in range(args.stall_repeats):
        for keyType, load in variants:
            variant = f"{keyType} load={load}"
            log(f"figure 3: {args.stall_certs} certificates, {variant}, run {repeat + 1}")
            workdir = os.path.join(tmp, f"f3-{keyType}-{load}-{repeat}")
            try:
                result = withPebble(
                    workdir,
                    embedded(
                        "issue",
                        "--n",
                        str(args.stall_certs),
                        "--key-type",
                        keyType,
                        "--probe",
                        "--load",
                        load,
                        "--rate",
                        str(args.rate),
                    ),
                )
            except Exception as error:
                traceback.print_exc()
                log(f"  failed: {error}")
                continue
            stalls = result["stalls"]
            loadResult = result.get("load") or {}
            log(
                f"  issued {result['certificates']} in {result['seconds']:.1f} s; "
                f"max stall {stalls['max_stall_ms']:.1f} ms; "
                f"p99 {loadResult.get('p99_ms', float('nan')):.2f} ms"
            )
            rec.add("3", variant, repeat, result)
            results.setdefault(variant, []).append(result)
    lines = [
        f"### Figure 3: responsiveness while issuing {args.stall_certs} certificates",
        "",
        "In process (ServerService, N https services). *stall*: lateness of a "
        "LoopingCall every 5 ms against its schedule. *paced* load: a separate "
        f"process sends {args.rate:g} GET/s over 2 kept-alive connections to "
        "`/.well-known/acme-challenge/test.txt`, latency counted from when each "
        "request was due (open loop); *wrk*: `wrk -t1 -c4` as fast as it can "
        "(closed loop, saturating). Targets: no stall over "
        f"{TARGETS['stall_ms']:g} ms, p99 < {TARGETS['p99_ms']:g} ms.",
        "",
        "| key type | load | runs | issue s | max stall, ms | stalls > 50 ms | "
        "p99 lateness, ms | challenge p99, ms | p99 from send, ms | requests | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for keyType, load in variants:
        r = results.get(f"{keyType} load={load}", [])
        loads = [x.get("load") or {} for x in r]
        errors = sum(
            (x.get("errors") or 0)
            if isinstance(x.get("errors"), int)
            else len(x.get("errors") or [])
            for x in loads
        )
        measured = load != "none"
        p99 = spread([x.get("p99_ms", float("nan")) for x in loads]) if measured else "n/a"
        p99FromSend = (
            spread([x.get("p99_from_send_ms", float("nan")) for x in loads])
            if load == "paced"
            else "n/a"
        )
        requests = spread([x.get("requests", 0) for x in loads], 0) if measured else "n/a"
        lines.append(
            f"| {keyType} | {load} | {len(r)} | {spread([x['seconds'] for x in r], 1)} | "
            f"{spread([x['stalls']['max_stall_ms'] for x in r], 1)} | "
            f"{spread([x['stalls']['stalls_over_50ms'] for x in r], 0)} | "
            f"{spread([x['stalls']['p99_lateness_ms'] for x in r], 1)} | "
            f"{p99} | {p99FromSend} | {requests} | "
            f"{errors if measured else 'n/a'} |"
        )
    worst = max(
        (x for rs in results.values() for x in rs),
        key=lambda x: x["stalls"]["max_stall_ms"],
        default=None,
    )
    if worst is not None and not worst["stalls"]["longest"]:
        lines += [
            "",
            "No stall reached 20 ms, where the watchdog starts sampling the "
            "reactor thread's stack.",
        ]
    elif worst is not None:
        lines += [
            "",
            f"The longest stalls of the run with the worst one "
            f"({worst['stalls']['max_stall_ms']:.0f} ms): when (s after start), how "
            "long, and where the reactor thread was, by 2 ms stack samples "
            "(innermost frame in letsencrypt_resource; innermost frame overall):",
            "",
            "| at, s | stall, ms | in our code | innermost |",
            "|---|---|---|---|",
        ]
        for stall in worst["stalls"]["longest"][:6]:
            ours = ", ".join(f"`{f}` ×{n}" for f, n in stall["ours"])
            inner = ", ".join(f"`{f}` ×{n}" for f, n in stall["innermost"])
            lines.append(f"| {stall['at_s']:.2f} | {stall['length_ms']:.0f} | {ours} | {inner} |")
    return lines


# Figure 4


def figure4(args: argparse.Namespace, tmp: str, rec: Recorder) -> list[str]:
    results: dict[str, list[dict[str, Any]]] = {}
    variants = [("ecdsa-p256", False), ("ecdsa-p256", True)]
    for keyType, export in variants:
        variant = f"{keyType}{' store_directory' if export else ''}"
        log(f"figure 4: switch-over, {variant}, {args.renewals} renewals")
        workdir = os.path.join(tmp, f"f4-{keyType}-{export}")
        try:
            result = withPebble(
                workdir,
                embedded(
                    "switch",
                    "--key-type",
                    keyType,
                    "--renewals",
                    str(args.renewals),
                    *(["--export"] if export else []),
                ),
            )
        except Exception as error:
            traceback.print_exc()
            log(f"  failed: {error}")
            continue
        switches = [r["switch_ms"] for r in result["renewals"]]
        log(
            f"  switch {spread(switches, 1)} ms, failed handshakes "
            f"{result['failed_handshakes']} of {result['handshakes']}"
        )
        for i, renewal in enumerate(result["renewals"]):
            rec.add("4", variant, i, renewal)
        rec.add(
            "4",
            variant,
            -1,
            {
                "handshakes": result["handshakes"],
                "failed_handshakes": result["failed_handshakes"],
                "failures": result["failures"],
            },
        )
        results[variant] = [result]
    lines = [
        "### Figure 4: switch-over to a renewed certificate",
        "",
        "One https service in process; a separate process does full TLS handshakes "
        "back to back (verifying the chain and name) while `resource.check(force=True)` "
        "renews. *switch*: from event 20015 (certificate stored) to the end of the "
        "first handshake that presented the new certificate (resolution: one "
        "handshake, a few ms). *in process*: 20015 to 20016 (service uses it). "
        f"Target < {TARGETS['switch_ms']:g} ms with zero failed handshakes.",
        "",
        "| variant | renewals | switch, ms | in process, ms | handshakes | failed |",
        "|---|---|---|---|---|---|",
    ]
    for variant, rs in results.items():
        r = rs[0]
        lines.append(
            f"| {variant} | {len(r['renewals'])} | "
            f"{spread([x['switch_ms'] for x in r['renewals']], 1)} | "
            f"{spread([x['in_process_ms'] for x in r['renewals']], 1)} | "
            f"{r['handshakes']} | {r['failed_handshakes']} |"
        )
    return lines


def environment(args: argparse.Namespace, argv: list[str]) -> list[str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib import metadata

    versions = []
    for package in ("twisted", "acme", "josepy", "cryptography", "pyOpenSSL", "treq"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} cores (nproc), {cpu}, "
        f"{platform.system()} {platform.release()}",
        f"- pebble: Debian {pebbleVersion()}, PEBBLE_VA_NOSLEEP=1, "
        f"PEBBLE_WFE_NONCEREJECT={NONCE_REJECT} (nonceReject=0), a fresh pebble per run",
        f"- python {platform.python_version()}; {', '.join(versions)}",
        f"- certbot: {contenders.certbotVersion()}; uacme: {contenders.uacmeVersion()}",
        f"- command: `{' '.join(shlex.quote(a) for a in argv)}`",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=20 only, fewer repeats")
    parser.add_argument("--figures", default="1,2,3,4,5")
    parser.add_argument("--contenders", default=",".join(contenders.CONTENDERS))
    parser.add_argument("--key-types", default=",".join(KEY_TYPES))
    parser.add_argument("--sizes", help="figure 1 N values (default 20,200; quick 20)")
    parser.add_argument("--repeats", type=int, help="figure 1 repeats (default 3)")
    parser.add_argument("--certbot-repeats", type=int, default=1)
    parser.add_argument(
        "--large-external-repeats",
        type=int,
        default=1,
        help="repeats of uacme at N >= 200",
    )
    parser.add_argument("--scale-consumers", type=int, default=1000)
    parser.add_argument("--scale-repeats", type=int, help="default 2; quick 1")
    parser.add_argument("--warm-sizes", help="figure 5 N values (default 1000,10000; quick 1000)")
    parser.add_argument("--settle-timeout", type=float, help="default 60 s; quick 15 s")
    parser.add_argument("--stall-certs", type=int, default=200)
    parser.add_argument("--stall-repeats", type=int, help="default 2; quick 1")
    parser.add_argument("--stall-key-types", default="ecdsa-p256,rsa-2048")
    parser.add_argument("--loads", help="figure 3 loads (default paced,wrk; quick paced)")
    parser.add_argument("--rate", type=float, default=50.0, help="paced load, GET/s")
    parser.add_argument("--renewals", type=int, help="default 10; quick 5")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args()
    args.contenders = [c for c in args.contenders.split(",") if c]
    args.key_types = [k for k in args.key_types.split(",") if k]
    args.stall_key_types = [k for k in args.stall_key_types.split(",") if k]
    args.loads = [
        x for x in (args.loads or ("paced" if args.quick else "paced,wrk")).split(",") if x
    ]
    if "wrk" in args.loads and shutil.which("wrk") is None:
        log("wrk is not installed (apt-get install wrk): figure 3 runs without it")
        args.loads.remove("wrk")
    args.warm_sizes = [
        int(x) for x in (args.warm_sizes or ("1000" if args.quick else "1000,10000")).split(",")
    ]
    args.sizes = [int(x) for x in (args.sizes or ("20" if args.quick else "20,200")).split(",")]
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.settle_timeout = args.settle_timeout or (15.0 if args.quick else 60.0)
    args.scale_repeats = args.scale_repeats or (1 if args.quick else 2)
    args.stall_repeats = args.stall_repeats or (1 if args.quick else 2)
    args.renewals = args.renewals or (5 if args.quick else 10)
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]

    started = time.perf_counter()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(BENCH, "results")
    os.makedirs(outdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="lr-bench-")
    rec = Recorder()
    argv = [os.path.relpath(sys.executable, ROOT), os.path.relpath(__file__, ROOT)] + sys.argv[1:]
    lines = [f"## Benchmark run {stamp}{' (quick)' if args.quick else ''}", ""]
    envLines = environment(args, argv)
    lines += envLines
    sections = {"1": figure1, "2": figure2, "3": figure3, "4": figure4, "5": figure5}
    timings = []
    try:
        for figure in figures:
            t0 = time.perf_counter()
            try:
                body = sections[figure](args, tmp, rec)
            except Exception:
                traceback.print_exc()
                body = [f"### Figure {figure}: failed", "", "```", traceback.format_exc(), "```"]
            timings.append(f"figure {figure} {time.perf_counter() - t0:.0f} s")
            lines += [""] + body
            rec.write(os.path.join(outdir, f"{stamp}.csv"))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"work folders kept in {tmp}")
    total = time.perf_counter() - started
    lines.insert(2 + len(envLines), f"- wall time: {total / 60:.1f} min ({', '.join(timings)})")
    text = "\n".join(lines) + "\n"
    print(text)
    rec.write(os.path.join(outdir, f"{stamp}.csv"))
    with open(os.path.join(outdir, f"{stamp}.md"), "w") as f:
        f.write(text)
    log(f"wrote bench/results/{stamp}.csv and .md in {total / 60:.1f} min")


if __name__ == "__main__":
    main()
