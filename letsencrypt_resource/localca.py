"""
The C{testca} command: a local test CA to try one's own configuration on.

C{letsencrypt-resource testca} starts pebble and its DNS helper on loopback
(see L{letsencrypt_resource.pebble}), prints the lines to paste into the
configuration's C{lets-encrypt} resource and the file a client trusts to
verify what it issues, and runs until C{SIGINT} or C{SIGTERM}; pebble stops
with it, whatever the signal.

The ports and files are the same at every start (the defaults, or the
options), and so is the listener CA that C{acme_ca_file} names (kept in the
folder while valid), so the pasted lines keep working; pebble itself makes
a new root for what it issues at every start.

With C{--config FILE}, the client commands it prints name the https
services of that configuration instead of C{NAME} and C{PORT}.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any, TextIO

from .config import ConfigurationError, loadConfiguration
from .pebble import RunningTestCA, TestCAError, TestCANotFound, startTestCA
from .safefs import UnusablePath, checkFolder, openFolder, replaceInFolder
from .shutdown import holdingShutdown

#: Where pebble validates HTTP-01 challenges by default, as pebble does.
DEFAULT_CHALLENGE_PORT = 5002
#: The port of the ACME directory by default, as pebble's own.
DEFAULT_ACME_PORT = 14000
#: The file of the roots a client trusts, in the command's folder.
ISSUERS_FILE = "test-ca-issuers.pem"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535)")
    return port


def addArguments(parser: argparse.ArgumentParser) -> None:
    """
    Add the C{testca} command's options to C{parser}.
    """
    parser.add_argument(
        "--directory",
        default="testca-state",
        help="the folder, private to you, where the test CA keeps its "
        "configuration, listener certificate, roots and logs, and the "
        "suggested state_directory (default: %(default)s)",
    )
    parser.add_argument(
        "--challenge-port",
        type=_port,
        default=DEFAULT_CHALLENGE_PORT,
        help="the port on 127.0.0.1 where the test CA validates HTTP-01 "
        "challenges: the resource's port (default: %(default)s)",
    )
    parser.add_argument(
        "--acme-port",
        type=_port,
        default=DEFAULT_ACME_PORT,
        help="the port on 127.0.0.1 of the ACME directory (default: %(default)s)",
    )


def _checkFree(port: int) -> None:
    """
    @raise TestCAError: when something listens on 127.0.0.1 C{port}.
    """
    with socket.socket() as probe:
        # As pebble listens: the closed connections of a test CA stopped
        # just before (TIME-WAIT) do not make the port taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError as error:
            raise TestCAError(
                f"cannot listen on 127.0.0.1 port {port} ({error.strerror}): "
                "choose another with --acme-port"
            ) from None


async def serve(reactor: Any, arguments: argparse.Namespace, out: TextIO) -> int:
    """
    Run the test CA until the reactor stops (C{SIGINT}, C{SIGTERM}), then
    stop it.

    @param reactor: provider of C{IReactorCore}, C{IReactorProcess},
        C{IReactorTCP} and C{IReactorTime}.
    @param arguments: the options L{addArguments} adds.
    @param out: where the lines for the user go, plain.
    @return: the exit status: 1 when the test CA could not start, 2 when
        the configuration C{--config} names is invalid (the reason goes to
        the standard error).
    """
    directory = os.path.abspath(arguments.directory)
    try:
        services = _services(getattr(arguments, "config", None))
    except ConfigurationError as error:
        print(f"{arguments.config}: {error}", file=sys.stderr, flush=True)
        return 2
    async with holdingShutdown(reactor) as stopping:
        try:
            _checkFree(arguments.acme_port)
            # Its files decide what the user's server and clients trust.
            checkFolder(directory, privateBase=True)
            with openFolder(directory):
                pass
            testCA = await startTestCA(
                reactor,
                os.path.join(directory, "pebble"),
                arguments.challenge_port,
                acmePort=arguments.acme_port,
            )
        except (TestCANotFound, TestCAError, UnusablePath) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        try:
            issuers = os.path.join(directory, ISSUERS_FILE)
            pem = await testCA.fetchIssuerPEM()
            with openFolder(directory) as folder:
                replaceInFolder(folder, [(ISSUERS_FILE, pem, 0o644)])
            print(
                instructions(testCA, arguments.challenge_port, directory, issuers, services),
                file=out,
                flush=True,
            )
            await stopping
        finally:
            await testCA.stop()
    return 0


#: The services the client commands name when no configuration is given.
_PLACEHOLDERS = (("NAME", "PORT"),)


def _services(path: str | None) -> tuple[tuple[str, str], ...]:
    """
    The first name and the port of each https service of the configuration
    at C{path}, for the client commands; placeholders without one.

    @raise ConfigurationError: when the configuration is invalid.
    """
    if path is None:
        return _PLACEHOLDERS
    services = loadConfiguration(path).services
    return tuple((s.domains[0], str(s.port)) for s in services if s.domains) or _PLACEHOLDERS


def instructions(
    testCA: RunningTestCA,
    challengePort: int,
    directory: str,
    issuers: str,
    services: tuple[tuple[str, str], ...] = _PLACEHOLDERS,
) -> str:
    """
    What to paste into the configuration, and how a client trusts the
    certificates: the lines are flush left, as an INI file needs them.

    @param services: the name and port of each https service the client
        commands are for.
    """
    if services == _PLACEHOLDERS:
        example = "For example, with the port and a name of one of your https services:"
    else:
        example = "For example, for the https services of your configuration:"
    clients = "\n".join(
        f"openssl s_client -connect 127.0.0.1:{port} -servername {name} "
        f"-CAfile {issuers} </dev/null | grep -E 'subject|issuer|Verify return'\n"
        f"curl --cacert {issuers} --resolve {name}:{port}:127.0.0.1 https://{name}:{port}/"
        for name, port in services
    )
    return f"""\
The local test CA is running. It answers 127.0.0.1 for every name and
validates HTTP-01 challenges on 127.0.0.1 port {challengePort}.

Paste into the lets-encrypt resource section ([resources/...]) of your
configuration, replacing the lines of the same options:

acme_url = {testCA.directoryURL}
acme_ca_file = {testCA.caFile}
address = 127.0.0.1
port = {challengePort}
agree_tos = yes
state_directory = {os.path.join(directory, "state")}

(This state_directory keeps the test certificates apart from real ones.)

Clients verify the certificates it issues with its root and intermediate,
new at every start of the test CA:

{issuers}

{example}

{clients}

Pebble's configuration and logs: {testCA.directory}
Press Ctrl-C (or send SIGTERM) to stop the test CA."""
