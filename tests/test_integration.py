"""
The real resource against a real pebble on loopback, checked with a real
TLS client.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from letsencrypt_resource.certificates import certificateNames
from letsencrypt_resource.config import loadConfiguration
from letsencrypt_resource.host import ServerService, checkFileSystem
from letsencrypt_resource.pebble import RunningTestCA, freeTCPPort
from tests.helpers.configuration import CONFIGURATION, HELLO
from tests.helpers.pebblecase import TestCACase
from tests.helpers.tlsclient import connectTLS, fetchOverTLS


class ServerTests(TestCACase):
    """
    A whole server built from a configuration file, as C{twistd} runs it.
    """

    async def startServer(self, keyType: str = "ecdsa-p256") -> tuple[Any, RunningTestCA]:
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        with open(os.path.join(directory, "public", "hello.txt"), "wb") as stream:
            stream.write(HELLO)
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                CONFIGURATION.format(
                    challengePort=challengePort,
                    directoryURL=testCA.directoryURL,
                    caFile=testCA.caFile,
                    keyType=keyType,
                    ports=[freeTCPPort() for _ in range(3)],
                )
            )
        configuration = loadConfiguration(path)
        checkFileSystem(configuration)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server = ServerService(configuration, reactor)
        server.startService()
        self.addCleanup(server.stopService)
        await server.resource.whenSettled()
        self.directory = directory
        return server, testCA

    async def test_servicesPresentIssuedCertificates(self) -> None:
        """
        Each service presents a certificate for its names that chains to
        pebble's root, and serves its files over it.
        """
        server, testCA = await self.startServer()
        issuers = await testCA.fetchIssuerPEM()
        root = x509.load_pem_x509_certificates(issuers)[0]
        seen = {}
        for service in server.fileServices:
            options = service.options
            certificate, received = await fetchOverTLS(
                reactor, options.port, options.domains[0], issuers, "/hello.txt", HELLO
            )
            self.assertEqual(set(certificateNames(certificate)), set(options.domains))
            self.assertNotEqual(certificate.issuer, root.subject)
            self.assertIn(HELLO, received)
            seen[options.name] = certificate
        self.assertEqual(seen["files-https"], seen["files-again-https"])
        self.assertNotEqual(seen["files-https"], seen["reports-https"])
        ids = [e.get("event_id") for e in self.events]
        self.assertEqual(ids.count(20015), 2)
        self.assertEqual(ids.count(20016), 3)
        self.assertNotIn(20017, ids)

    async def test_storeDirectory(self) -> None:
        """
        The store directory holds the four files of each certificate, the
        private key readable by its owner only.
        """
        await self.startServer(keyType="rsa-2048")
        folder = os.path.join(self.directory, "exported", "files.example.test_www.example.test")
        self.assertEqual(
            sorted(os.listdir(folder)),
            ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"],
        )
        mode = stat.S_IMODE(os.stat(os.path.join(folder, "privkey.pem")).st_mode)
        self.assertEqual(mode, 0o600)
        with open(os.path.join(folder, "fullchain.pem"), "rb") as stream:
            fullchain = stream.read()
        with open(os.path.join(folder, "cert.pem"), "rb") as stream:
            self.assertTrue(fullchain.startswith(stream.read()))
        state = os.path.join(self.directory, "state")
        for folderPath, _folders, files in os.walk(state):
            self.assertEqual(stat.S_IMODE(os.stat(folderPath).st_mode), 0o700)
            for name in files:
                mode = stat.S_IMODE(os.stat(os.path.join(folderPath, name)).st_mode)
                self.assertEqual(mode, 0o600, name)

    async def test_switchInPlace(self) -> None:
        """
        After a renewal, new handshakes get the new certificate while a
        connection opened before goes on working.
        """
        server, testCA = await self.startServer()
        issuers = await testCA.fetchIssuerPEM()
        port = server.fileServices[2].options.port
        before = await connectTLS(reactor, port, "reports.example.test", issuers)
        self.addCleanup(lambda: before.lost)
        self.addCleanup(before.transport.loseConnection)
        await before.get("/hello.txt", HELLO)
        await server.resource.check(force=True)
        after, _ = await fetchOverTLS(
            reactor, port, "reports.example.test", issuers, "/hello.txt", HELLO
        )
        self.assertNotEqual(after.serial_number, before.peerCertificate().serial_number)
        received = await before.get("/hello.txt", HELLO)
        self.assertEqual(received.count(HELLO), 2)
