"""
Test support: fakes and helpers for testing the resource and code that
embeds it, in the manner of C{twisted.internet.testing}.  No runtime module
of the package imports it; it needs the C{testing} extra
(C{pip install "letsencrypt-resource[testing]"}, which adds C{treq}).

  - L{FakeACMEServer}: a small RFC 8555 server as a C{twisted.web}
    resource, served in memory with C{treq.testing.RequestTraversalAgent}
    for deterministic unit tests, or on a loopback port; see
    L{letsencrypt_resource.testing.acmeserver}.
  - L{RecordingConsumer} and L{MemoryStore}: an L{ICertificateConsumer
    <letsencrypt_resource.interfaces.ICertificateConsumer>} that remembers
    what it was given, and an L{IStorage
    <letsencrypt_resource.storage.interface.IStorage>} in memory whose
    writes can be made to fail and whose records tests read at once.
  - L{runUntilFired} and L{advanceThrough}: drive a
    C{twisted.internet.task.Clock} as real time would.
  - L{letsencrypt_resource.testing.pebble}: what tests need of a local
    pebble beyond what L{letsencrypt_resource.pebble} runs for the
    C{testca} command.
"""

from .acmeserver import BASE, FakeACMEServer, Fault, registeredClient
from .clock import advanceThrough, runUntilFired
from .fakes import MemoryStore, RecordingConsumer

__all__ = [
    "BASE",
    "FakeACMEServer",
    "Fault",
    "MemoryStore",
    "RecordingConsumer",
    "advanceThrough",
    "registeredClient",
    "runUntilFired",
]
