"""
Whole servers for integration tests, built from an INI text as C{twistd}
builds them, each in a folder of its own that serves L{HELLO}.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from letsencrypt_resource.config import loadConfiguration
from letsencrypt_resource.host import ServerService, checkFileSystem
from tests.helpers.configuration import HELLO


def startServer(case: TestCase, configuration: str) -> ServerService:
    """
    Write C{configuration} to a new folder beside a C{public} folder that
    holds C{hello.txt}, and start the server it describes, stopped when
    C{case} ends.
    """
    folder = os.path.abspath(case.mktemp())
    os.makedirs(os.path.join(folder, "public"))
    with open(os.path.join(folder, "public", "hello.txt"), "wb") as stream:
        stream.write(HELLO)
    path = os.path.join(folder, "server.ini")
    with open(path, "w") as stream:
        stream.write(configuration)
    loaded = loadConfiguration(path)
    checkFileSystem(loaded)
    server = ServerService(loaded, reactor)
    server.startService()
    case.addCleanup(lambda: server.stopService() if server.running else None)
    return server
