"""
The operations command: C{python -m letsencrypt_resource --config FILE ...}.

It asks the running server through its control socket; when no server runs,
it takes the state directory's lock and does the work itself, answering
HTTP-01 challenges on the configured address and port for the orders it
makes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.task import react
from zope.interface.registry import Components

from .config import ConfigurationError
from .control import StateDirectoryLocked, StateLock, askServer, dispatch
from .host import makeResource, readConfiguration
from .interfaces import ICertificateConsumer
from .operations import REVOCATION_REASONS, NoConsumer, OperationError, Operations


def parser() -> argparse.ArgumentParser:
    """
    The command line.
    """
    top = argparse.ArgumentParser(
        prog="python -m letsencrypt_resource",
        description="Look at and act on the certificates of a lets-encrypt resource.",
    )
    top.add_argument("--config", "-c", required=True, help="the INI configuration file")
    commands = top.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="every certificate, its expiry and next check")
    status.add_argument("--json", action="store_true", help="print JSON for machines")
    renew = commands.add_parser("renew", help="renew what is due, or everything with --force")
    renew.add_argument("--force", action="store_true", help="renew even when not due")
    renew.add_argument("domains", nargs="*", metavar="DOMAIN", help="only these sets")
    revoke = commands.add_parser("revoke", help="revoke a certificate, then replace it")
    revoke.add_argument("domain", metavar="DOMAIN", help="a name of the certificate")
    revoke.add_argument(
        "--reason", default="unspecified", choices=sorted(REVOCATION_REASONS)
    )
    account = commands.add_parser("account", help="the ACME account")
    account.add_argument("action", choices=["show", "rollover", "deactivate"])
    return top


def request(arguments: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """
    The operation name and arguments the command line asks for.
    """
    if arguments.command == "status":
        return "status", {}
    if arguments.command == "renew":
        return "renew", {"names": arguments.domains, "force": arguments.force}
    if arguments.command == "revoke":
        return "revoke", {"name": arguments.domain, "reason": arguments.reason}
    return f"account-{arguments.action}", {}


async def runAlone(reactor: Any, configuration: Any, name: str, arguments: dict[str, Any]) -> Any:
    """
    Run the operation without a server: load the state, answer challenges
    when the operation needs the CA, and stop.
    """
    options = configuration.resource
    registry = Components()
    for service in configuration.services:
        registry.registerUtility(
            NoConsumer(service.name, service.domains), ICertificateConsumer, name=service.section
        )
    resource, pool = makeResource(options, registry, reactor, automatic=False)
    operations = Operations(resource, reactor)
    if name == "status":
        resource.load()
        return operations.status()
    resource.startService()
    try:
        return await dispatch(operations, name, arguments)
    finally:
        await resource.stopService()
        await pool.closeCachedConnections()


async def run(
    reactor: Any, argv: list[str], out: TextIO, err: TextIO | None = None
) -> int:
    """
    Run the command line C{argv}, printing results to C{out} and errors to
    C{err} (by default the standard error); return the exit status: 1 when
    anything asked for failed.
    """
    err = sys.stderr if err is None else err
    arguments = parser().parse_args(argv)
    try:
        configuration = readConfiguration(arguments.config)
    except ConfigurationError as error:
        print(f"{arguments.config}: {error}", file=err)
        return 2
    if configuration.resource is None:
        print(f"{arguments.config}: no enabled lets-encrypt resource", file=err)
        return 2
    name, operationArguments = request(arguments)
    state = configuration.resource.stateDirectory
    try:
        try:
            result = await askServer(reactor, state, name, operationArguments)
        except (ConnectError, OSError):
            lock = StateLock(state)
            lock.acquire()
            try:
                result = await runAlone(reactor, configuration, name, operationArguments)
            finally:
                lock.release()
    except (OperationError, StateDirectoryLocked) as error:
        print(f"error: {error}", file=err)
        return 1
    except Exception as error:
        print(f"error: {type(error).__name__}: {error}", file=err)
        return 1
    if getattr(arguments, "json", False) or name != "status":
        print(json.dumps(result, indent=2), file=out)
    else:
        print(formatStatus(result), file=out)
    return 0


def formatStatus(rows: list[dict[str, Any]]) -> str:
    """
    The status rows as a table for people.
    """
    headers = ["names", "issuer", "not after", "days left", "next check", "why", "last error"]
    table = [headers]
    for row in rows:
        table.append(
            [
                ", ".join(row["names"]),
                "provisional" if row["provisional"] else row["issuer"] or "",
                row["not_after"] or "",
                "" if row["days_left"] is None else f"{row['days_left']:.1f}",
                row["next_check"],
                row["why"],
                row["last_error"] or "",
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """
    The command's entry point.
    """
    argv = sys.argv[1:] if argv is None else argv

    def go(reactor: Any) -> Deferred[None]:
        async def operate() -> None:
            status = await run(reactor, argv, sys.stdout)
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(operate())

    react(go)
