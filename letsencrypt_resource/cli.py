"""
The operations command: C{letsencrypt-resource [--config FILE] COMMAND ...},
also run as C{python -m letsencrypt_resource}.

It asks the running server through its control socket; when no server runs,
it takes the state directory's lock and does the work itself, answering
HTTP-01 challenges on the configured address and port for the orders it
makes.  C{testca} runs a local test CA and needs no configuration.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .display import formatRenewal, formatStatus
from .quickstatus import quickStatus

if TYPE_CHECKING:
    import argparse

    from twisted.internet.defer import Deferred

    from .config import Configuration
    from .consumerregistry import ConsumerRegistry
    from .control import StateLock
    from .reactors import Reactor

# The rest of the package is imported where it is used: a status that the
# running server answers (quickstatus) imports none of it.

#: The command's name when it runs as C{python -m letsencrypt_resource}.
MODULE_PROG = "python -m letsencrypt_resource"


def _checks(name: str) -> tuple[Callable[[Configuration], None], ...]:
    """
    What operation C{name} uses of the file system, beyond the file itself:
    no operation serves files, so none needs the services' folders;
    C{status} does not reach the CA either.
    """
    from .statechecks import STATUS_CHECKS

    if name == "status":
        return STATUS_CHECKS
    from .host import checkCA

    return (checkCA, *STATUS_CHECKS)


#: Seconds to wait for a server that holds the state directory's lock to
#: answer on its control socket, as one that is starting does soon.
SERVER_START_WAIT = 10.0
#: Seconds between two tries meanwhile.
_ASK_AGAIN = 0.2


def parser(prog: str = "letsencrypt-resource") -> argparse.ArgumentParser:
    """
    The command line; C{--config} goes before or after the subcommand.
    """
    # Imported here: a status the server answers parses no command line
    # with it (a fifth of the command's imports).
    import argparse

    from . import localca
    from .operations import REVOCATION_REASONS

    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the INI configuration file (required but for testca, whose "
        "client commands then name its https services)",
    )
    top = argparse.ArgumentParser(
        prog=prog,
        parents=[config],
        description="Look at and act on the certificates of a lets-encrypt resource.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[config], help=help, description=help)

    status = command("status", "every certificate, what serves it and what comes next")
    status.add_argument("--json", action="store_true", help="print JSON for machines")
    renew = command("renew", "renew what is due, or everything with --force")
    renew.add_argument("--force", action="store_true", help="renew even when not due")
    renew.add_argument("--json", action="store_true", help="print JSON for machines")
    renew.add_argument("domains", nargs="*", metavar="DOMAIN", help="only these sets")
    revoke = command("revoke", "revoke a certificate, then replace it")
    revoke.add_argument("domain", metavar="DOMAIN", help="a name of the certificate")
    revoke.add_argument("--reason", default="unspecified", choices=sorted(REVOCATION_REASONS))
    account = command("account", "the ACME account")
    account.add_argument("action", choices=["show", "rollover", "deactivate"])
    account.add_argument(
        "--ca",
        metavar="SECTION",
        default=None,
        help="the account at this fallback CA ([cas/<id>] section) instead of the "
        "resource's own CA",
    )
    testca = command("testca", "run a local test CA for a configuration of your own")
    localca.addArguments(testca)
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
    if arguments.ca is not None:
        # A name of its own: a server too old to know it refuses it, rather
        # than acting on its own CA's account.
        return f"account-{arguments.action}-at", {"ca": arguments.ca}
    return f"account-{arguments.action}", {}


async def _runAlone(
    reactor: Reactor,
    configuration: Configuration,
    name: str,
    arguments: dict[str, Any],
    lock: StateLock | None = None,
) -> Any:
    """
    Run the operation without a server: load the state, answer challenges
    when the operation needs the CA, and stop.

    @param lock: The state directory's lock, held.
    """
    options = configuration.resource
    assert options is not None, "run() refuses a configuration without a resource"
    if name == "status":
        return await _statusAlone(reactor, configuration, lock)

    import attrs

    from .control import dispatch
    from .host import makeResource
    from .operations import Operations

    # A run of a few seconds is no target to scrape; its deploy runs are
    # waited for when it stops.
    options = attrs.evolve(options, metricsPort=None, metricsEndpoint=None)
    registry = standInConsumers(configuration)
    resource = makeResource(options, registry, reactor, automatic=False, lock=lock)
    operations = Operations(resource, reactor, serverRunning=False)
    resource.startService()
    try:
        await resource.whenSettled()
        return await dispatch(operations, name, arguments)
    finally:
        await resource.stopService()


def standInConsumers(configuration: Configuration) -> ConsumerRegistry:
    """
    A registry of a stand-in consumer for each service of C{configuration},
    for a command run without the server: registered in time linear in the
    number of services (see L{ConsumerRegistry}).
    """
    from .consumerregistry import ConsumerRegistry
    from .interfaces import ICertificateConsumer
    from .statusrows import NoConsumer

    registry = ConsumerRegistry("letsencrypt-resource command")
    for service in configuration.services:
        registry.registerUtility(
            NoConsumer(service.name, service.domains), ICertificateConsumer, name=service.section
        )
    return registry


async def _statusAlone(
    reactor: Reactor, configuration: Configuration, lock: StateLock | None
) -> Any:
    """
    The status rows read from the state itself, without a resource (see
    L{offlineStatus <letsencrypt_resource.statusreader.offlineStatus>}).

    @param lock: The state directory's lock, held, if it exists.
    """
    from .nodestorage import makeStorage, stopReactor
    from .statusreader import offlineStatus

    options = configuration.resource
    assert options is not None, "run() refuses a configuration without a resource"
    storage = makeStorage(options, reactor, lock, stopReactor(reactor))
    try:
        return await offlineStatus(options, configuration.services, storage, reactor)
    finally:
        await storage.close()


async def _operate(
    reactor: Reactor,
    configuration: Configuration,
    state: str,
    name: str,
    arguments: dict[str, Any],
    err: TextIO,
) -> tuple[Any, bool]:
    """
    Ask the server to run the operation or, when none runs, run it alone,
    on the state directory C{state} of the configuration's resource.

    A server takes the state directory's lock before it listens on its
    control socket, so while the lock is held and nothing answers, the
    server is asked again for up to L{SERVER_START_WAIT} seconds, on the
    reactor's clock (a C{status} reading alone meanwhile, too).  A
    C{status} run alone holds the lock as a reader, which a server that
    starts meanwhile waits for.

    @return: The operation's result, and whether a server ran it.
    @raise StateDirectoryLocked: when the lock stays held and nothing
        answers.
    """
    from twisted.internet.error import ConnectError
    from twisted.internet.task import deferLater

    from .control import StateDirectoryLocked, StateLock, askServer

    deadline = reactor.seconds() + SERVER_START_WAIT
    while True:
        try:
            return await askServer(reactor, state, name, arguments), True
        except (ConnectError, OSError):
            pass
        if name == "status" and not os.path.lexists(state):
            # Read-only, and nothing to read: create nothing, not even the
            # lock.
            print(f"note: the state directory {state} does not exist yet", file=err)
            return await _runAlone(reactor, configuration, name, arguments), False
        lock = StateLock(state)
        try:
            lock.acquire(reader=name == "status", wait=0)
        except StateDirectoryLocked:
            if reactor.seconds() >= deadline:
                raise
            await deferLater(reactor, _ASK_AGAIN, lambda: None)
            continue
        try:
            return await _runAlone(reactor, configuration, name, arguments, lock), False
        finally:
            lock.release()


async def run(
    reactor: Reactor,
    argv: list[str],
    out: TextIO,
    err: TextIO | None = None,
    prog: str = "letsencrypt-resource",
) -> int:
    """
    Run the command line C{argv}, printing results to C{out} and errors to
    C{err} (by default the standard error); return the exit status: 1 when
    anything asked for failed, 2 when the configuration is invalid.
    """
    from . import localca
    from .config import ConfigurationError
    from .control import StateDirectoryLocked
    from .host import readConfiguration
    from .operations import OperationError

    err = sys.stderr if err is None else err
    commandLine = parser(prog)
    arguments = commandLine.parse_args(argv)
    if arguments.command == "testca":
        return await localca.serve(reactor, arguments, out)
    if "config" not in arguments:
        commandLine.error(f"{arguments.command} needs --config FILE")
    name, operationArguments = request(arguments)
    try:
        configuration = readConfiguration(arguments.config, _checks(name))
    except ConfigurationError as error:
        print(f"{arguments.config}: {error}", file=err)
        return 2
    if configuration.resource is None:
        print(f"{arguments.config}: no enabled lets-encrypt resource", file=err)
        return 2
    state = configuration.resource.stateDirectory
    try:
        result, serverRunning = await _operate(
            reactor, configuration, state, name, operationArguments, err
        )
    except StateDirectoryLocked as error:
        print(
            f"error: another process ({error.holder}) holds the state directory "
            f"{state} and did not answer on its control socket within "
            f"{SERVER_START_WAIT:g} s: a server still starting, a server whose "
            "control socket failed (event 20175), or an operations command "
            "working alone",
            file=err,
        )
        return 1
    except OperationError as error:
        print(f"error: {error}", file=err)
        return 1
    except Exception as error:
        print(f"error: {type(error).__name__}: {error}", file=err)
        return 1
    if getattr(arguments, "json", False) or name not in ("status", "renew"):
        print(json.dumps(result), file=out)
        return 0
    try:
        if name == "status":
            text = formatStatus(result, serverRunning, state)
        else:
            text = formatRenewal(result)
    except (LookupError, TypeError, ValueError, AttributeError) as error:
        # Only a server's answer can be of another shape.
        print(f"error: the server's answer cannot be shown: {error!r}", file=err)
        return 1
    print(text, file=out)
    return 0


def main(argv: list[str] | None = None, prog: str = "letsencrypt-resource") -> None:
    """
    The command's entry point: a status that the running server answers
    is printed at once (see L{quickStatus}), and one read from a state
    directory that no server runs on without a reactor (see
    L{_localStatus}); anything else runs the full command, in a reactor.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        if quickStatus(argv, sys.stdout) or _localStatus(argv):
            sys.stdout.flush()
            return
    except BrokenPipeError:
        _closedOutput()
        raise SystemExit(1) from None

    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    def go(reactor: Reactor) -> Deferred[None]:
        async def operate() -> None:
            try:
                status = await run(reactor, argv, sys.stdout, prog=prog)
                sys.stdout.flush()
            except BrokenPipeError:
                _closedOutput()
                status = 1
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(operate())

    react(go)


def _localStatus(argv: list[str]) -> bool:
    """
    Print the status read from the state directory in this thread, when
    no server runs (see L{localStatus
    <letsencrypt_resource.localstatus.localStatus>}): imported only then.
    """
    from .localstatus import localStatus

    return localStatus(argv, sys.stdout)


def _closedOutput() -> None:
    """
    The reader stopped reading (status | head -3): nothing more can be
    printed, and no traceback is wanted.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
