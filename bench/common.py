"""
Small helpers shared by the benchmark's orchestrator and workers.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Iterable
from typing import Any

from cryptography import x509

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
# The checkout's package, not a copy installed in the virtualenv: what is
# measured is this tree.  Nothing under tests/ is imported from here.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: Worker processes print their result as one line starting with this.
RESULT_PREFIX = "BENCH-RESULT "


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def names(n: int, run: str) -> list[str]:
    """
    C{n} one-label-per-certificate names under example.test, unique per run
    (pebble forgets everything between runs anyway).
    """
    return [f"s{i:04d}-{run}.example.test" for i in range(n)]


def emitResult(result: dict[str, Any]) -> None:
    sys.__stdout__.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.__stdout__.flush()


def parseResult(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise ValueError("the worker printed no result")


def vmRSS() -> int:
    """
    Resident memory of this process, bytes (VmRSS).
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tlsPeerCertificate(
    port: int, serverName: str, rootFile: str, timeout: float = 5.0
) -> x509.Certificate:
    """
    One real TLS handshake with 127.0.0.1:C{port} asking for C{serverName}:
    the chain must verify to the root in C{rootFile} and the name must match.

    @raise ssl.SSLError, OSError: when the handshake or verification fails.
    """
    context = ssl.create_default_context(cafile=rootFile)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=serverName) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def checkIssued(pem: bytes, name: str, issuersFile: str) -> None:
    """
    Check that C{pem} (a certificate or a full chain) starts with a
    certificate for C{name} issued by this pebble's intermediate.

    @raise ValueError: when it does not.
    """
    leaf = x509.load_pem_x509_certificates(pem)[0]
    with open(issuersFile, "rb") as f:
        issuers = x509.load_pem_x509_certificates(f.read())
    intermediate = issuers[-1]
    leaf.verify_directly_issued_by(intermediate)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    if name not in san.value.get_values_for_type(x509.DNSName):
        raise ValueError(f"certificate is not for {name}")


def summary(values: Iterable[float]) -> dict[str, float]:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


RESOURCE_SECTION = """\
[server]
name = bench.example.test

[resources/bench]
type = lets-encrypt
address = 127.0.0.1
port = {challengePort}
acme_url = {directoryURL}
acme_ca_file = {caFile}
state_directory = {state}
key_type = {keyType}
{accountOptions}"""

SERVICE_SECTION = """
[services/s{index:04d}]
type = https
name = https-{index:04d}
address = 127.0.0.1
port = {port}
path = {public}
ssl_domains = {name}
"""

#: An FTPS service of the FTPS benches (bench/ftpsrate.py,
#: bench/ftpssessions.py), which append options of their own.
FTPS_SECTION = """
[services/ftps]
type = ftps
name = bench-ftps
address = 127.0.0.1
port = {port}
path = {path}
users_file = {usersFile}
ssl_domains = {name}
"""


def accountOptions() -> str:
    """
    The resource options that let it register an account with pebble
    without asking: C{agree_tos = yes} where the product has that option.
    """
    from letsencrypt_resource import config

    known = {option.name for option in config.RESOURCE_OPTIONS}
    return "agree_tos = yes\n" if "agree_tos" in known else ""


def writeServerConfig(
    directory: str,
    directoryURL: str,
    caFile: str,
    challengePort: int,
    serviceNames: list[str],
    keyType: str,
    extra: str = "",
) -> tuple[str, list[int]]:
    """
    Write a server configuration: the resource plus one https service per
    name, each with one name, as a user would.

    @return: The configuration file's path and the services' ports.
    """
    os.makedirs(directory, exist_ok=True)
    public = os.path.join(directory, "public")
    os.makedirs(public, exist_ok=True)
    with open(os.path.join(public, "ok.txt"), "w") as f:
        f.write("ok\n")
    text = (
        RESOURCE_SECTION.format(
            challengePort=challengePort,
            directoryURL=directoryURL,
            caFile=caFile,
            state=os.path.join(directory, "state"),
            keyType=keyType,
            accountOptions=accountOptions(),
        )
        + extra
    )
    ports = []
    used = {challengePort}
    for index, name in enumerate(serviceNames):
        port = freePort()
        while port in used:
            port = freePort()
        used.add(port)
        ports.append(port)
        text += SERVICE_SECTION.format(index=index, port=port, public=public, name=name)
    path = os.path.join(directory, "server.ini")
    with open(path, "w") as f:
        f.write(text)
    return path, ports
