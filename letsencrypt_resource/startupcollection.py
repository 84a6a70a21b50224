"""
The garbage collector while C{twistd lets-encrypt} builds itself, before
its reactor runs.

Reading the configuration and building the services of 10,000
certificates makes about 160,000 objects the collector tracks, all of
which live as long as the server, and no garbage in a cycle.  With the
collector on, its automatic collections went through them again and again
as they grew (0.5 s of CPU or more at 10,000 services, before the reactor
ran), and the freeze once the domain sets were loaded collected all of
them again on the running reactor (a stall of 0.3 s of CPU).  So automatic collection
pauses from the moment the configuration is read (L{pauseCollection})
until every service has started, still before the reactor runs: then one
collection frees what the start made in a cycle, what is left is frozen
out of the collector's reach (C{gc.freeze}), and automatic collection
resumes (L{ResumeCollection}).  Nothing waits on the reactor yet, so that
collection stalls no one.  The server freezes again once its domain sets
are loaded (see L{ServerService <letsencrypt_resource.host.ServerService>}):
that collection only goes through what was made since (10,000 objects,
a few milliseconds).
"""

from __future__ import annotations

import gc

from twisted.application.service import Service


def pauseCollection() -> bool:
    """
    Stop automatic collection, if it is on.

    @return: Whether it was on, and so whether L{ResumeCollection} is to
        turn it on again.
    """
    paused = gc.isenabled()
    gc.disable()
    return paused


class ResumeCollection(Service):
    """
    Started after the server's other services: collects what start-up made
    in a cycle, freezes what is left, and turns automatic collection on
    again if L{pauseCollection} had turned it off.
    """

    def __init__(self, paused: bool):
        """
        @param paused: What L{pauseCollection} returned.
        """
        self._paused = paused

    def startService(self) -> None:
        super().startService()
        gc.collect()
        gc.freeze()
        if self._paused:
            self._paused = False
            gc.enable()
