"""
Reloading the configuration of a running server: what a new configuration
changes, and the C{SIGHUP} handler that asks for a reload.

L{planReload} is pure: it compares the running configuration with a new,
valid one.  L{letsencrypt_resource.host.ServerService.reload} applies the
plan.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads

from .config import Configuration, ResourceOptions, ServiceOptions, optionName


@attrs.frozen
class ReloadPlan:
    """
    What applying a new configuration does.

    @ivar stop: The sections of the services to stop: those removed, and
        those whose options changed.
    @ivar start: The options of the services to start: those added, and
        the new options of those changed.
    @ivar changed: The sections of the services whose options changed.
    @ivar unchanged: The sections of the services that keep running as
        they are.
    @ivar restartSection: The resource section whose changes wait for a
        restart, or C{None}.
    @ivar restartOptions: The options of that section that changed.
    """

    stop: tuple[str, ...] = ()
    start: tuple[ServiceOptions, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    restartSection: str | None = None
    restartOptions: tuple[str, ...] = ()

    @property
    def added(self) -> tuple[str, ...]:
        """
        The sections of the services added.
        """
        return tuple(o.section for o in self.start if o.section not in self.changed)

    @property
    def removed(self) -> tuple[str, ...]:
        """
        The sections of the services removed.
        """
        return tuple(s for s in self.stop if s not in self.changed)


def changedResourceOptions(old: ResourceOptions, new: ResourceOptions) -> tuple[str, ...]:
    """
    The names of the options that differ between C{old} and C{new}, as the
    configuration file spells them.
    """
    names = []
    for field in attrs.fields(ResourceOptions):
        if getattr(old, field.name) != getattr(new, field.name):
            name = optionName(field)
            if name not in names:
                names.append(name)
    return tuple(names)


def planReload(running: Configuration, new: Configuration) -> ReloadPlan:
    """
    What applying C{new} over C{running} does.

    Services are told apart by their section: a section with the same
    options keeps running untouched; one whose options differ is stopped
    and started again with its new options.  Changes to the resource
    section wait for a restart.
    """
    restartSection: str | None = None
    restartOptions: tuple[str, ...] = ()
    if running.resource is not None and new.resource is not None:
        restartOptions = changedResourceOptions(running.resource, new.resource)
        if restartOptions:
            restartSection = new.resource.section
    old = {options.section: options for options in running.services}
    wanted = {options.section: options for options in new.services}
    changed = tuple(s for s in old if s in wanted and wanted[s] != old[s])
    return ReloadPlan(
        stop=tuple(s for s in old if s not in wanted or s in changed),
        start=tuple(o for s, o in wanted.items() if s not in old or s in changed),
        changed=changed,
        unchanged=tuple(s for s in old if s in wanted and wanted[s] == old[s]),
        restartSection=restartSection,
        restartOptions=restartOptions,
    )


class ReloadOnHangUp(Service):
    """
    While running, answers C{SIGHUP} by calling C{reload} in the reactor
    thread; the signal handler itself only schedules it.  Stopping puts
    back the handler that was there before.
    """

    def __init__(self, reload: Callable[[], object], reactor: IReactorFromThreads):
        self._reload = reload
        self._reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._received)

    def stopService(self) -> None:
        super().stopService()
        previous = signal.SIG_DFL if self._previous is None else self._previous
        signal.signal(signal.SIGHUP, previous)

    def _received(self, number: int, frame: object) -> None:
        self._reactor.callFromThread(self._reload)
