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
until every service has started, still before the reactor runs: then
what the start made is frozen out of the collector's reach
(C{gc.freeze}), without a collection first, and automatic collection
resumes (L{ResumeCollection}); a configuration refused turns it on
again at once (L{resumeCollection}).  Before that, twistd's plugin
imports the server's modules with collection paused and freezes them as
the import ends: a young collection over them would
take 0.04 s of CPU to free the import's leftover cycles (about 1,600
objects, 0.3 MB), which are frozen with them instead.  The server freezes
again once its domain sets are loaded (see
L{ServerService <letsencrypt_resource.host.ServerService>}): where
L{ResumeCollection} froze the start without collecting, so does that
freeze (L{frozeStartUp}): a collection there went through everything the
load made (0.07-0.13 s of CPU at 10,000 sets, a stall of the running
reactor) to free one small cycle of Twisted's thread pool per batch of
sets read (about 160 at 10,000 sets, 65 KB), kept for good instead.

Loading the domain sets and delivering their certificates pause it too
(L{pausedCollection}); under twistd, the load starts with the server,
before L{ResumeCollection} runs, and goes on once the reactor runs: the
pauses nest, and automatic collection resumes when the last one ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.application.service import Service

#: Whether L{ResumeCollection} froze the start-up without collecting.
_frozeStartUp = False
#: Whether L{pauseCollection} turned automatic collection off, and so
#: L{resumeCollection} is to turn it on again: once per process, however
#: many times the options are parsed.
_paused = False

#: How many L{pausedCollection}s are going on.
_pauses = 0

#: Whether the last L{pausedCollection} to end is to turn automatic
#: collection on: the first found it on, or L{resumeCollection} came
#: meanwhile.
_resumeAfter = False


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
    off: whoever else turned it off decides.  While a L{pausedCollection}
    goes on, the last to end turns it on.
    """
    global _paused, _resumeAfter
    if _paused:
        _paused = False
        if _pauses:
            _resumeAfter = True
        else:
            gc.enable()


@contextmanager
def pausedCollection() -> Iterator[None]:
    """
    Pause the garbage collector's automatic collections within, and resume
    them after the last of those going on ends, if the first found them on
    or L{resumeCollection} came meanwhile: whoever else turned them off
    decides.  What loading makes lives as long as its sets, and with the
    heap growing by a quarter again and again, the collector went over all
    of it each time: at 10,000 sets, 13 full collections, 2.7 s of the
    start-up's CPU and stalls of the reactor up to half a second.  The
    server collects once after the load
    (L{letsencrypt_resource.host.ServerService}).
    """
    global _pauses, _resumeAfter
    if gc.isenabled():
        _resumeAfter = True
    elif not _pauses:
        _resumeAfter = False
    gc.disable()
    _pauses += 1
    try:
        yield
    finally:
        _pauses -= 1
        if not _pauses and _resumeAfter:
            _resumeAfter = False
            gc.enable()


class ResumeCollection(Service):
    """
    Started after the server's other services: freezes what start-up made,
    without a collection first, and turns automatic collection on again if
    L{pauseCollection} had turned it off (once the domain sets have loaded,
    if they are still loading: see L{pausedCollection}).

    A collection first would go through every object start-up made (about
    300,000 at 10,000 services: 0.22 s of CPU, the largest single cost
    before the reactor runs) to free the few it left in a cycle, which the
    freeze keeps for good: at 200, 1,000 and 10,000 services alike, 8
    objects or none of the server's (848 bytes, the contexts of two calls
    of Twisted's thread pool), and under real twistd about 200 of its own
    (20 KB: its plugin cache, its log observers), measured by
    C{bench/frozengarbage.py} (a collection that keeps what it finds,
    just before the freeze).

    It is meant for a fresh twistd process, whose garbage so far is that
    of its imports (collected once they end, see the module's
    description).  In a long-lived process that builds a server with
    C{letsencrypt_resource.tap} (C{Options.parseOptions}, C{makeService}),
    whatever garbage in cycles waits for a collection when the server
    starts is frozen with it, for good: collect first (C{gc.collect()})
    before parsing the options, or embed the resource instead
    (L{ServerService <letsencrypt_resource.host.ServerService>} and
    C{makeResource} do not freeze without collecting).
    """

    def startService(self) -> None:
        global _frozeStartUp
        super().startService()
        gc.freeze()
        _frozeStartUp = True
        resumeCollection()


def frozeStartUp() -> bool:
    """
    Whether L{ResumeCollection} froze the start-up without collecting: the
    process then keeps the few objects in cycles made since, rather than
    collecting again on the running reactor (see the module's description).
    """
    return _frozeStartUp
