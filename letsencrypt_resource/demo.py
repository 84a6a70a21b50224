"""
The demo: the product run for real against a local test CA.

C{python -m letsencrypt_resource.demo} starts pebble on loopback, writes a
configuration with two HTTPS file services and an FTPS one (explicit,
anonymous, read-only) for names under C{example.test}, runs the server from
it exactly as C{twistd lets-encrypt} would, and tells how to look at the
certificates the services present and how to download a file over FTPS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from .config import loadConfiguration
from .host import ServerService, checkFileSystem
from .pebble import RunningTestCA, freeTCPPort, startTestCA
from .shutdown import holdingShutdown

DEMO_CONFIGURATION = """\
# Written by the demo: a server on a local test CA (pebble).
[server]
name = demo.example.test

[resources/demo-lets-encrypt]
type = lets-encrypt
name = lets-encrypt-demo
address = 127.0.0.1
port = {challengePort}
acme_url = {directoryURL}
acme_ca_file = {caFile}
state_directory = state
store_directory = certificates
key_type = ecdsa-p256
# The test CA's terms: agreeing is always explicit.
agree_tos = yes

[services/demo-files]
type = https
name = files-https
address = 127.0.0.1
port = {filesPort}
path = public
ssl_domains = files.example.test, www.example.test

[services/demo-reports]
type = https
name = reports-https
address = 127.0.0.1
port = {reportsPort}
path = public
ssl_domains = reports.example.test

[services/demo-ftps]
type = ftps
name = files-ftps
address = 127.0.0.1
port = {ftpsPort}
path = public
# Read-only for anyone: the demo has no accounts.
anonymous = yes
ssl_domains = ftp.example.test
"""


def _writeDemo(directory: str, testCA: RunningTestCA, challengePort: int) -> str:
    """
    Write the demo's configuration and served folder under C{directory}.

    @return: The configuration file's path.
    """
    public = os.path.join(directory, "public")
    os.makedirs(public, exist_ok=True)
    with open(os.path.join(public, "hello.txt"), "w") as stream:
        stream.write("Hello from letsencrypt-resource.\n")
    path = os.path.join(directory, "demo.ini")
    with open(path, "w") as stream:
        stream.write(
            DEMO_CONFIGURATION.format(
                challengePort=challengePort,
                directoryURL=testCA.directoryURL,
                caFile=testCA.caFile,
                filesPort=freeTCPPort(),
                reportsPort=freeTCPPort(),
                ftpsPort=freeTCPPort(),
            )
        )
    return path


async def _runDemo(reactor: Any, directory: str, duration: float | None, out: TextIO) -> None:
    """
    Run the demo until the reactor stops (a signal, or after C{duration}
    seconds), then stop the server and the test CA before the process
    exits.

    @param out: where the lines for the user go, plain.
    """
    # Each pebble start makes a new root: what an earlier run kept chains
    # to a root that is gone.
    for previous in ("state", "certificates", "pebble"):
        shutil.rmtree(os.path.join(directory, previous), ignore_errors=True)
    async with holdingShutdown(reactor) as stopping:
        challengePort = freeTCPPort()
        testCA = await startTestCA(reactor, os.path.join(directory, "pebble"), challengePort)
        try:
            configuration = loadConfiguration(_writeDemo(directory, testCA, challengePort))
            checkFileSystem(configuration)
            issuers = os.path.join(directory, "test-ca-issuers.pem")
            with open(issuers, "wb") as stream:
                stream.write(await testCA.fetchIssuerPEM())
            server = ServerService(configuration, reactor)
            server.startService()
            try:
                assert server.resource is not None
                await server.resource.whenSettled()
                print(
                    _instructions(configuration, issuers, directory),
                    file=out,
                    flush=True,
                )
                if duration is not None:
                    reactor.callLater(duration, reactor.stop)
                await stopping
            finally:
                await server.stopService()
        finally:
            await testCA.stop()


def _instructions(configuration: Any, issuers: str, directory: str) -> str:
    lines = ["", "The demo is running. Each service now presents a test CA certificate:"]
    for service in configuration.services:
        if service.type == "ftps":
            continue
        lines.append(
            f"  openssl s_client -connect {service.address}:{service.port} "
            f"-servername {service.domains[0]} -CAfile {issuers} </dev/null "
            "| grep -E 'subject|issuer|Verify return'"
        )
    for service in configuration.services:
        if service.type != "ftps":
            continue
        name = service.domains[0]
        lines.append(
            "A file over FTPS (AUTH TLS, PROT P), the certificate checked for "
            f"{name}:\n  curl --ssl-reqd --cacert {issuers} "
            f"--resolve {name}:{service.port}:{service.address} "
            f"ftp://{name}:{service.port}/hello.txt"
        )
    lines.append(f"Files exported for other programs: {os.path.join(directory, 'certificates')}")
    lines.append(
        "The certificates' status, from another terminal: "
        f"{_operationsCommand()} status --config {os.path.join(directory, 'demo.ini')}"
    )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _operationsCommand() -> str:
    """
    How to run the operations command with this Python: its
    C{letsencrypt-resource} script when it is installed beside it, else
    C{python -m letsencrypt_resource}.
    """
    script = os.path.join(os.path.dirname(sys.executable), "letsencrypt-resource")
    if os.access(script, os.X_OK):
        return script
    return f"{sys.executable} -m letsencrypt_resource"


def main(argv: list[str] | None = None) -> None:
    """
    Run the demo from the command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--directory", default="demo-state", help="where the demo keeps its files")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    arguments = parser.parse_args(argv)
    directory = os.path.abspath(arguments.directory)
    os.makedirs(directory, exist_ok=True)
    # The log and the lines to copy share the terminal; only the log has
    # a prefix.
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    react(
        lambda reactor: Deferred.fromCoroutine(
            _runDemo(reactor, directory, arguments.duration, sys.stdout)
        )
    )


if __name__ == "__main__":
    main()
