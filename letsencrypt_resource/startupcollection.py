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
resumes (L{ResumeCollection}); a configuration refused turns it on
again at once (L{resumeCollection}).  Nothing waits on the reactor yet, so that
collection stalls no one.  The server freezes again once its domain sets
are loaded (see L{ServerService <letsencrypt_resource.host.ServerService>}):
that collection only goes through what was made since (10,000 objects,
a few milliseconds).
"""

from __future__ import annotations

import gc

from twisted.application.service import Service

#: Whether L{pauseCollection} turned automatic collection off, and so
#: L{resumeCollection} is to turn it on again: once per process, however
#: many times the options are parsed.
_paused = False


def pauseCollection() -> bool:
    """
    Stop automatic collection, if it is on.

    @return: Whether it was on.
    """
    global _paused
    on = gc.isenabled()
    if on:
        gc.disable()
        _paused = True
    return on


def resumeCollection() -> None:
    """
    Turn automatic collection on again, if L{pauseCollection} turned it
    off: whoever else turned it off decides.
    """
    global _paused
    if _paused:
        _paused = False
        gc.enable()


class ResumeCollection(Service):
    """
    Started after the server's other services: collects what start-up made
    in a cycle, freezes what is left, and turns automatic collection on
    again if L{pauseCollection} had turned it off.
    """

    def startService(self) -> None:
        super().startService()
        gc.collect()
        gc.freeze()
        resumeCollection()
