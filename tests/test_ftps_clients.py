"""
The FTPS service of a whole server, on a certificate the resource obtained
from a real pebble, with clients no one here wrote: curl (explicit
C{--ssl-reqd ftp://} and implicit C{ftps://}, the host name checked
against the test CA's root), resuming transfers with C{-C -}.
"""

from __future__ import annotations

import os
import shutil

import bcrypt
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest

from letsencrypt_resource.config import loadConfiguration
from letsencrypt_resource.host import ServerService, checkFileSystem
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.testing.pebble import RESOURCE_SECTION
from tests.helpers.pebblecase import TestCACase

NAME = "ftp.example.test"
USER, PASSWORD = "alice", "wonderland"
CONTENT = b"Hello over FTPS.\n" * 100

CONFIGURATION = (
    RESOURCE_SECTION
    + """\

[services/explicit]
type = ftps
name = explicit-ftps
address = 127.0.0.1
port = {ports[0]}
path = ftp
users_file = ftp-users
writable = yes
ssl_domains = {name}

[services/implicit]
type = ftps
name = implicit-ftps
implicit = yes
address = 127.0.0.1
port = {ports[1]}
path = ftp
users_file = ftp-users
writable = yes
ssl_domains = {name}
"""
)


class _ServerCase(TestCACase):
    """
    A server with an explicit and an implicit FTPS service, on a
    certificate from pebble; L{caFile} holds pebble's root and
    intermediate.
    """

    client = "curl"

    async def setUp(self) -> None:  # type: ignore[override]
        super().setUp()
        if shutil.which(self.client) is None:
            raise SkipTest(f"{self.client} is not installed")
        challengePort = freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "ftp", USER))
        with open(os.path.join(directory, "ftp", USER, "hello.txt"), "wb") as stream:
            stream.write(CONTENT)
        with open(os.path.join(directory, "ftp-users"), "wb") as stream:
            stream.write(
                b"%s:%s\n" % (USER.encode(), bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)))
            )
        self.ports = [freeTCPPort(), freeTCPPort()]
        while self.ports[1] in (self.ports[0], challengePort):
            # A port just closed may be given again.
            self.ports[1] = freeTCPPort()
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                CONFIGURATION.format(
                    keyType="rsa-2048",
                    challengePort=challengePort,
                    directoryURL=testCA.directoryURL,
                    caFile=testCA.caFile,
                    ports=self.ports,
                    name=NAME,
                )
            )
        configuration = loadConfiguration(path)
        checkFileSystem(configuration)
        server = ServerService(configuration, reactor)
        server.startService()
        self.addCleanup(server.stopService)
        self.server = server
        await server.resource.whenSettled()
        self.caFile = os.path.join(directory, "issuers.pem")
        with open(self.caFile, "wb") as stream:
            stream.write(await testCA.fetchIssuerPEM())
        self.directory = directory


class CurlTests(_ServerCase):
    """
    curl against the explicit and the implicit FTPS service of one server.
    """

    async def curl(self, url: str, *arguments: str, name: str = NAME) -> tuple[int, bytes, bytes]:
        """
        Run curl on C{url} (whose host is L{NAME}, resolved to loopback
        as C{name}) with the account, trusting only the test CA.
        """
        port = url.rsplit(":", 1)[1].split("/")[0]
        out, err, code = await getProcessOutputAndValue(
            "curl",
            (
                "--silent",
                "--show-error",
                "--max-time",
                "30",
                "--cacert",
                self.caFile,
                "--resolve",
                f"{name}:{port}:127.0.0.1",
                "--user",
                f"{USER}:{PASSWORD}",
                *arguments,
                url,
            ),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            reactor=reactor,
        )
        return code, out, err

    async def checkListDownloadUpload(self, base: str) -> None:
        """
        List the account's folder, download a file, upload one and read it
        back, each with its own curl.
        """
        code, listing, err = await self.curl(base + "/", "--list-only", "--ssl-reqd")
        self.assertEqual((code, listing, err), (0, b"hello.txt\n", b""))
        code, received, err = await self.curl(base + "/hello.txt", "--ssl-reqd")
        self.assertEqual((code, received == CONTENT, err), (0, True, b""))
        upload = os.path.join(self.directory, "upload.bin")
        with open(upload, "wb") as stream:
            stream.write(CONTENT * 50)
        code, _, err = await self.curl(
            base + "/uploaded.bin", "--upload-file", upload, "--ssl-reqd"
        )
        self.assertEqual((code, err), (0, b""))
        with open(os.path.join(self.directory, "ftp", USER, "uploaded.bin"), "rb") as stream:
            self.assertEqual(stream.read(), CONTENT * 50)

    async def test_explicit(self) -> None:
        """
        C{curl --ssl-reqd ftp://} (AUTH TLS) lists, downloads and uploads
        over the CA-issued certificate, resuming the session on each data
        connection.
        """
        await self.checkListDownloadUpload(f"ftp://{NAME}:{self.ports[0]}")

    async def test_implicit(self) -> None:
        """
        C{curl ftps://} (implicit) lists, downloads and uploads over the
        CA-issued certificate.
        """
        await self.checkListDownloadUpload(f"ftps://{NAME}:{self.ports[1]}")

    async def test_afterRenewal(self) -> None:
        """
        After a renewal, new sessions of both services present the renewed
        certificate to curl, and list, download and upload over it.
        """
        operations = Operations(self.server.resource, reactor)
        [managed] = operations.select([NAME])
        before = managed.current
        [row] = await operations.renew([NAME], True)
        self.assertEqual(row["outcome"], "renewed")
        assert managed.current is not None and managed.current is not before
        renewed = b"".join(
            managed.current.certificate.public_bytes(Encoding.PEM).splitlines()[1:-1]
        )
        for base in (f"ftp://{NAME}:{self.ports[0]}", f"ftps://{NAME}:{self.ports[1]}"):
            code, out, err = await self.curl(
                base + "/", "--list-only", "--ssl-reqd", "--write-out", "%{certs}"
            )
            self.assertEqual((code, err), (0, b""))
            self.assertIn(renewed, b"".join(out.splitlines()))
            await self.checkListDownloadUpload(base)
            os.remove(os.path.join(self.directory, "ftp", USER, "uploaded.bin"))

    async def checkResumed(
        self, url: str, partial: str, kept: bytes, whole: bytes, *arguments: str
    ) -> None:
        """
        Write C{kept} to the file C{partial}, run C{curl -C -} with
        C{arguments} on C{url}, and check that C{partial} then holds
        C{kept} followed by the rest of C{whole}: the first bytes, which
        differ from the whole file's, were not transferred again.
        """
        with open(partial, "wb") as stream:
            stream.write(kept)
        code, _, err = await self.curl(url, "--ssl-reqd", "--continue-at", "-", *arguments)
        self.assertEqual((code, err), (0, b""))
        with open(partial, "rb") as stream:
            self.assertEqual(stream.read(), kept + whole[len(kept) :])

    async def checkResume(self, base: str) -> None:
        """
        C{curl -C -} finishes a partial download (REST, RETR) and a partial
        upload (SIZE, APPE).
        """
        partial = os.path.join(self.directory, "partial.txt")
        await self.checkResumed(
            base + "/hello.txt", partial, b"d" * 500, CONTENT, "--output", partial
        )
        whole = CONTENT * 50
        upload = os.path.join(self.directory, "whole.bin")
        with open(upload, "wb") as stream:
            stream.write(whole)
        stored = os.path.join(self.directory, "ftp", USER, "resumed.bin")
        await self.checkResumed(
            base + "/resumed.bin", stored, b"u" * 1000, whole, "--upload-file", upload
        )

    async def test_resume(self) -> None:
        """
        C{curl -C -} resumes a download and an upload over explicit and
        implicit FTPS.
        """
        await self.checkResume(f"ftp://{NAME}:{self.ports[0]}")
        await self.checkResume(f"ftps://{NAME}:{self.ports[1]}")

    async def test_hostNameChecked(self) -> None:
        """
        curl refuses the certificate for another name (exit 60): it is the
        certificate for L{NAME} that the service presents.
        """
        code, _, _ = await self.curl(
            f"ftps://other.example.test:{self.ports[1]}/", name="other.example.test"
        )
        self.assertEqual(code, 60)


class OpenSSLTests(_ServerCase):
    """
    C{openssl s_client -starttls ftp} on the explicit service.
    """

    client = "openssl"

    async def test_startTLS(self) -> None:
        """
        After AUTH TLS, the control connection presents the certificate the
        test CA issued for L{NAME}, which verifies against its root with
        the name checked.
        """
        out, err, code = await getProcessOutputAndValue(
            "sh",
            (
                "-c",
                'exec openssl "$@" < /dev/null',
                "openssl",
                "s_client",
                "-starttls",
                "ftp",
                "-connect",
                f"127.0.0.1:{self.ports[0]}",
                "-servername",
                NAME,
                "-verify_hostname",
                NAME,
                "-verify_return_error",
                "-CAfile",
                self.caFile,
            ),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"Verify return code: 0 (ok)", out)
        self.assertIn(f"CN = {NAME}".encode(), out)
