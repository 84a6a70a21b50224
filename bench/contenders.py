"""
Figure 1's contenders.  Each function runs one contender once against a
fresh pebble and returns a dict with at least C{seconds} (start to the last
certificate) and C{certificates} (how many were obtained and verified), or
C{skipped} with the reason.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from common import (
    BENCH,
    ROOT,
    checkIssued,
    names,
    parseResult,
    tlsPeerCertificate,
    writeServerConfig,
)
from pebblectl import Pebble

PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
TWISTD = os.path.join(ROOT, ".venv", "bin", "twistd")
CERTBOT_VENV = os.path.join(BENCH, ".venv-certbot")
CERTBOT = os.path.join(CERTBOT_VENV, "bin", "certbot")
#: No contender run may take longer than this.
RUN_TIMEOUT = 3600.0


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def runWorker(args: list[str], timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """
    Run a Python worker of the main virtualenv; return its BENCH-RESULT.
    """
    process = subprocess.Popen(
        [PYTHON] + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(PYTHONPATH=ROOT),
    )
    timedOut = False
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # A worker that hangs after printing its result (some print it
        # before stopping the resource) still counts, flagged.
        timedOut = True
        process.kill()
        out, err = process.communicate()
    try:
        result = parseResult(out)
    except ValueError:
        raise RuntimeError(
            f"worker {args[0]} failed (exit {process.returncode}"
            f"{', timed out' if timedOut else ''}):\n{out[-1500:]}\n{err[-3000:]}"
        ) from None
    if timedOut:
        result["worker_hung_after_result"] = True
    return result


def pebbleArgs(pebble: Pebble) -> list[str]:
    return [
        "--directory-url",
        pebble.directoryURL,
        "--ca-file",
        pebble.caFile,
        "--challenge-port",
        str(pebble.challengePort),
    ]


# (a) twistd, the way users run it


def twistd(pebble: Pebble, workdir: str, n: int, keyType: str, run: str) -> dict[str, Any]:
    serviceNames = names(n, run)
    path, ports = writeServerConfig(
        workdir,
        pebble.directoryURL,
        pebble.caFile,
        pebble.challengePort,
        serviceNames,
        keyType,
    )
    start = time.perf_counter()
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "lets-encrypt", "--config", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=_env(PYTHONPATH=ROOT),
    )
    seen = 0
    failures = 0
    end = None
    listening = None
    buffer = b""
    tail: list[str] = []
    deadline = start + RUN_TIMEOUT
    try:
        while end is None:
            if time.perf_counter() > deadline:
                raise RuntimeError("twistd timed out")
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    raise RuntimeError("twistd exited:\n" + "\n".join(tail[-30:]))
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                process.wait()
                raise RuntimeError("twistd exited:\n" + "\n".join(tail[-30:]))
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                tail = (tail + [line])[-50:]
                if "] 20151 " in line and listening is None:
                    listening = time.perf_counter()
                if "] 20016 " in line:
                    seen += 1
                    if seen == n:
                        end = time.perf_counter()
                elif "] 20017 " in line:
                    failures += 1
        verified = 0
        for port, name in zip(ports, serviceNames, strict=False):
            tlsPeerCertificate(port, name, pebble.rootFile)
            verified += 1
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    return {
        "seconds": end - start,
        "certificates": verified,
        "failures_20017": failures,
        # From spawn to the challenge site listening (event 20151): the
        # interpreter, imports, twistd and the configuration.
        "startup_seconds": (listening - start) if listening else None,
    }


# (b) embedded, through the in-process API


def runEmbedded(
    command: str, pebble: Pebble, workdir: str, *options: str, timeout: float = RUN_TIMEOUT
) -> dict[str, Any]:
    """
    Run C{bench/embedded.py COMMAND} against C{pebble} in C{workdir}, with
    more C{options}; return its result.
    """
    return runWorker(
        [
            os.path.join(BENCH, "embedded.py"),
            command,
            *pebbleArgs(pebble),
            "--root-file",
            pebble.rootFile,
            "--workdir",
            workdir,
            *options,
        ],
        timeout=timeout,
    )


def embedded(pebble: Pebble, workdir: str, n: int, keyType: str, run: str) -> dict[str, Any]:
    result = runEmbedded(
        "issue", pebble, workdir, "--n", str(n), "--run", run, "--key-type", keyType, "--verify"
    )
    result["certificates"] = result.pop("verified")
    return result


# (c) certbot


def certbotAvailable() -> str | None:
    """
    Make bench/.venv-certbot with certbot from PyPI when missing.

    @return: None when certbot is there, else why it is not.
    """
    if os.access(CERTBOT, os.X_OK):
        return None
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", CERTBOT_VENV], check=True, capture_output=True
        )
        subprocess.run(
            [os.path.join(CERTBOT_VENV, "bin", "pip"), "install", "-q", "certbot"],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as error:
        shutil.rmtree(CERTBOT_VENV, ignore_errors=True)
        return f"certbot could not be installed from PyPI: {error}"
    return None if os.access(CERTBOT, os.X_OK) else "certbot install left no executable"


def certbotVersion() -> str:
    try:
        out = subprocess.run([CERTBOT, "--version"], capture_output=True, text=True)
        return (out.stdout or out.stderr).strip()
    except OSError:
        return "not installed"


def certbot(pebble: Pebble, workdir: str, n: int, keyType: str, run: str) -> dict[str, Any]:
    why = certbotAvailable()
    if why:
        return {"skipped": why}
    base = [
        CERTBOT,
        "certonly",
        "--standalone",
        "--non-interactive",
        "--agree-tos",
        "-m",
        "x@example.test",
        "--no-eff-email",
        "--server",
        pebble.directoryURL,
        "--config-dir",
        os.path.join(workdir, "config"),
        "--work-dir",
        os.path.join(workdir, "work"),
        "--logs-dir",
        os.path.join(workdir, "logs"),
        "--http-01-port",
        str(pebble.challengePort),
        "--http-01-address",
        "127.0.0.1",
    ]
    if keyType == "ecdsa-p256":
        base += ["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"]
    else:
        base += ["--key-type", "rsa", "--rsa-key-size", "2048"]
    env = _env(REQUESTS_CA_BUNDLE=pebble.caFile)
    serviceNames = names(n, run)
    start = time.perf_counter()
    for name in serviceNames:
        process = subprocess.run(
            base + ["-d", name], capture_output=True, text=True, env=env, timeout=600
        )
        if process.returncode != 0:
            raise RuntimeError(f"certbot failed for {name}:\n{process.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    for name in serviceNames:
        with open(os.path.join(workdir, "config", "live", name, "fullchain.pem"), "rb") as f:
            checkIssued(f.read(), name, pebble.issuersFile)
    return {"seconds": seconds, "certificates": len(serviceNames)}


# (d) uacme

UACME_SCRIPT = """\
set -e
mount --bind "$PEBBLE_CA" /etc/ssl/certs/ca-certificates.crt
uacme -c "$CONFDIR" -a "$ACME_URL" -y -t "$KEYTYPE" $BITS new >/dev/null
for name in $NAMES; do
    uacme -c "$CONFDIR" -a "$ACME_URL" -o -t "$KEYTYPE" $BITS -h "$HOOK" issue "$name" >/dev/null
done
"""


def uacmeAvailable() -> str | None:
    if shutil.which("uacme") is None:
        return "uacme is not installed (apt-get install uacme)"
    if not os.path.exists("/usr/share/uacme/uacme.sh"):
        return "uacme's hook script /usr/share/uacme/uacme.sh is missing"
    if shutil.which("unshare") is None:
        return "unshare is missing"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -m is not allowed here: {probe.stderr.strip()}"
    return None


def uacmeVersion() -> str:
    try:
        out = subprocess.run(["uacme", "-V"], capture_output=True, text=True)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError):
        return "not installed"


def uacme(pebble: Pebble, workdir: str, n: int, keyType: str, run: str) -> dict[str, Any]:
    why = uacmeAvailable()
    if why:
        return {"skipped": why}
    webroot = os.path.join(workdir, "www")
    challenges = os.path.join(webroot, ".well-known", "acme-challenge")
    os.makedirs(challenges)
    confdir = os.path.join(workdir, "uacme")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            webroot,
            str(pebble.challengePort),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    serviceNames = names(n, run)
    try:
        _waitForPort(pebble.challengePort)
        env = _env(
            PEBBLE_CA=pebble.caFile,
            CONFDIR=confdir,
            ACME_URL=pebble.directoryURL,
            KEYTYPE="EC" if keyType == "ecdsa-p256" else "RSA",
            BITS="-b 256" if keyType == "ecdsa-p256" else "-b 2048",
            HOOK="/usr/share/uacme/uacme.sh",
            UACME_CHALLENGE_PATH=challenges,
            NAMES=" ".join(serviceNames),
        )
        start = time.perf_counter()
        process = subprocess.run(
            ["unshare", "-m", "sh", "-c", UACME_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            timeout=RUN_TIMEOUT,
        )
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            raise RuntimeError(f"uacme failed:\n{process.stderr[-3000:]}")
    finally:
        server.terminate()
        server.wait()
    for name in serviceNames:
        with open(os.path.join(confdir, name, "cert.pem"), "rb") as f:
            checkIssued(f.read(), name, pebble.issuersFile)
    return {"seconds": seconds, "certificates": len(serviceNames)}


def _waitForPort(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


# (e) the floor


def floor(pebble: Pebble, workdir: str, n: int, keyType: str, run: str) -> dict[str, Any]:
    result = runWorker(
        [
            os.path.join(BENCH, "floor.py"),
            *pebbleArgs(pebble),
            "--issuers-file",
            pebble.issuersFile,
            "--n",
            str(n),
            "--run",
            run,
            "--key-type",
            keyType,
        ]
    )
    return result


CONTENDERS = {
    "twistd": twistd,
    "embedded": embedded,
    "certbot": certbot,
    "uacme": uacme,
    "floor": floor,
}

DESCRIPTIONS = {
    "twistd": "this resource: `twistd -n lets-encrypt --config <ini>`, N https services",
    "embedded": "this resource in process: ServerService(parseConfiguration(...))",
    "certbot": "certbot certonly --standalone, one process per certificate",
    "uacme": "uacme issue, one process per certificate, webroot hook",
    "floor": "bare sequential loop over the acme library, 10 ms polling",
}
