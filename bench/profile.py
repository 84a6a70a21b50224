"""
Profile one in-process benchmark worker with py-spy and say where the
reactor thread's CPU goes, by our functions and by library.

    .venv/bin/python bench/profile.py issue --n 200 --key-type ecdsa-p256
    .venv/bin/python bench/profile.py scale --n 1000

Needs py-spy in bench/.venv (python3 -m venv bench/.venv &&
bench/.venv/bin/pip install py-spy).  Starts a fresh pebble (nonceReject=0),
records at 250 Hz (GIL holders only, so waiting in epoll is not counted),
writes the raw collapsed stacks to bench/results/ (feed them to any
flame-graph tool) and prints the summary.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BENCH, ROOT, freePort  # noqa: E402
from pebblectl import Pebble  # noqa: E402

PYSPY = os.path.join(BENCH, ".venv", "bin", "py-spy")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:]*)(?::(?P<line>\d+))?\)$")

LIBRARIES = [
    ("letsencrypt_resource", "letsencrypt_resource/"),
    ("josepy", "josepy/"),
    ("acme", "acme/"),
    ("OpenSSL (pyOpenSSL)", "OpenSSL/"),
    ("cryptography", "cryptography/"),
    ("treq", "treq/"),
    ("hyperlink", "hyperlink/"),
    ("twisted.web", "twisted/web/"),
    ("twisted.logger", "twisted/logger/"),
    ("twisted.internet.defer", "twisted/internet/defer.py"),
    ("twisted socket I/O (send/recv, loopback TCP)", "twisted/python/util.py"),
    ("twisted (other)", "twisted/"),
    ("zope", "zope/"),
    ("attrs", "attr"),
    ("json", "json/"),
]


def library(path: str) -> str:
    for name, marker in LIBRARIES:
        if path.startswith(marker) or "/" + marker in path:
            return name
    return "stdlib and other"


def summarise(raw: str, mainOnly: bool = True, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    selfTime: collections.Counter[str] = collections.Counter()
    byLibrary: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if mainOnly and frames and "MainThread" not in frames[0] and "process" not in frames[0]:
            # py-spy --threads puts "thread (0x...)" first; the main thread is
            # the one running the reactor.
            if not any("mainLoop" in f for f in frames):
                continue
        total += n
        parsed = [FRAME.match(f) for f in frames]
        parsed = [p for p in parsed if p]
        if not parsed:
            continue
        leaf = parsed[-1]
        byLibrary[library(leaf["file"])] += n
        selfTime[f"{leaf['func']} ({_short(leaf['file'])})"] += n
        seen = set()
        for p in parsed:
            if (
                p["file"].startswith("letsencrypt_resource/")
                or "/letsencrypt_resource/" in p["file"]
            ):
                key = f"{_short(p['file'])} {p['func']}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += n
    out = [f"{total} samples on the reactor thread", "", "by library (self time):"]
    for name, n in byLibrary.most_common():
        out.append(f"  {100 * n / total:5.1f}%  {name}")
    out += ["", "our functions (inclusive):"]
    for name, n in inclusive.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {name}")
    out += ["", "hottest functions (self time):"]
    for name, n in selfTime.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {name}")
    return "\n".join(out)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["issue", "scale"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--key-type", default="ecdsa-p256")
    parser.add_argument("--load", default="none")
    parser.add_argument("--rate", default="50")
    parser.add_argument("--extra", default="", help="more worker arguments")
    parser.add_argument("--summarise", metavar="RAW", help="only summarise a raw file")
    args = parser.parse_args()
    if args.summarise:
        with open(args.summarise) as f:
            print(summarise(f.read()))
        return
    if not os.access(PYSPY, os.X_OK):
        raise SystemExit(
            "py-spy is missing: python3 -m venv bench/.venv && bench/.venv/bin/pip install py-spy"
        )
    tmp = tempfile.mkdtemp(prefix="lr-profile-")
    port = freePort()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(BENCH, "results")
    os.makedirs(outdir, exist_ok=True)
    base = os.path.join(outdir, f"profile-{args.what}-{args.n}-{args.key_type}-{stamp}")
    with Pebble.start(os.path.join(tmp, "pebble"), port) as pebble:
        target = [
            PYTHON,
            os.path.join(BENCH, "embedded.py"),
            args.what,
            "--directory-url",
            pebble.directoryURL,
            "--ca-file",
            pebble.caFile,
            "--root-file",
            pebble.rootFile,
            "--challenge-port",
            str(port),
            "--workdir",
            os.path.join(tmp, "run"),
            "--n",
            str(args.n),
            "--key-type",
            args.key_type,
        ]
        if args.what == "issue":
            target += ["--load", args.load, "--rate", args.rate]
        target += args.extra.split()
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.run(
            [PYSPY, "record", "-r", "250", "-f", "raw", "-o", base + ".txt", "--threads", "--"]
            + target,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
    with open(base + ".txt") as f:
        raw = f.read()
    print(f"raw stacks: {os.path.relpath(base + '.txt', ROOT)}")
    print(summarise(raw))


if __name__ == "__main__":
    main()
