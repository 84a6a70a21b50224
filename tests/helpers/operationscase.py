"""
A configuration on a test CA, and the operations command run in-process,
for the tests of the operations and of what they run (deploy hooks).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from cryptography import x509
from twisted.internet import reactor

from letsencrypt_resource.cli import run
from letsencrypt_resource.config import loadConfiguration
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort
from tests.helpers.configuration import CONFIGURATION, HELLO
from tests.helpers.pebblecase import TestCACase
from tests.helpers.tlsclient import fetchOverTLS


class OperationsCase(TestCACase):
    """
    A configuration on a test CA, and the operations command run in-process.
    """

    async def setUpConfiguration(
        self, modern: bool = False, extra: str = "", **testCAOptions: Any
    ) -> RunningTestCA:
        challengePort = freeTCPPort()
        self.testCA = await self.startTestCA(challengePort, modern=modern, **testCAOptions)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "public"))
        with open(os.path.join(self.directory, "public", "hello.txt"), "wb") as stream:
            stream.write(HELLO)
        self.ports = [freeTCPPort() for _ in range(3)]
        self.path = os.path.join(self.directory, "server.ini")
        text = CONFIGURATION.format(
            challengePort=challengePort,
            directoryURL=self.testCA.directoryURL,
            caFile=self.testCA.caFile,
            keyType="ecdsa-p256",
            ports=self.ports,
        )
        with open(self.path, "w") as stream:
            stream.write(text.replace("agree_tos = yes\n", "agree_tos = yes\n" + extra))
        return self.testCA

    async def startServer(self) -> ServerService:
        server = ServerService(loadConfiguration(self.path), reactor)
        server.startService()
        self.addCleanup(server.stopService)
        await server.resource.whenSettled()
        return server

    async def command(self, *argv: str, status: int = 0) -> Any:
        out = io.StringIO()
        code = await run(reactor, ["--config", self.path, *argv], out)
        self.assertEqual(code, status, out.getvalue())
        text = out.getvalue()
        return json.loads(text) if text.startswith(("[", "{")) else text

    async def served(self, index: int, name: str) -> x509.Certificate:
        issuers = await self.testCA.fetchIssuerPEM()
        certificate, _ = await fetchOverTLS(
            reactor, self.ports[index], name, issuers, "/hello.txt", HELLO
        )
        return certificate
