"""
A real FTPS service on loopback for the tests, with a tree of files,
accounts and links, and C{ftplib} clients run in threads.
"""

from __future__ import annotations

import ftplib
import io
import os
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import bcrypt
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from letsencrypt_resource.config import ServiceOptions
from letsencrypt_resource.ftps import FTPSService
from letsencrypt_resource.ftpsoptions import FTPSOptions
from letsencrypt_resource.testing.ftpsclient import ImplicitFTPS, ResumingFTPS, clientContext
from tests.helpers import newSigner, provisionalFor

T = TypeVar("T")

#: The name on the service's certificate.
NAME = "ftp.example.com"
#: The account of the tests, and its password.
USER, PASSWORD = "alice", "wonderland"
#: The content of the files of the tree.
CONTENT = b"hello over FTPS\n" * 64
SECRET = b"not for FTPS clients\n"


def makeTree(base: str) -> str:
    """
    Make under C{base}: C{served/} with C{hello.txt}, C{alice/own.txt}, a
    link to a file outside, a link to a folder outside, a hidden file; and
    C{outside/secret.txt}.  Return the served folder.
    """
    served = os.path.join(base, "served")
    outside = os.path.join(base, "outside")
    os.makedirs(os.path.join(served, USER))
    os.makedirs(outside)
    for path, content in [
        (os.path.join(served, "hello.txt"), CONTENT),
        (os.path.join(served, USER, "own.txt"), CONTENT),
        (os.path.join(served, ".hidden"), SECRET),
        (os.path.join(outside, "secret.txt"), SECRET),
    ]:
        with open(path, "wb") as file:
            file.write(content)
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(served, USER, "secret-link"))
    os.symlink(outside, os.path.join(served, USER, "outside-link"))
    os.symlink(os.path.join(served, "hello.txt"), os.path.join(served, USER, "inside-link"))
    return served


def retrieve(client: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    """
    Download C{path} with C{client}, from the offset C{rest} if given.
    """
    received = io.BytesIO()
    client.retrbinary(f"RETR {path}", received.write, rest=rest)
    return received.getvalue()


def runAtOnce(function: Callable[..., T], *args: Any) -> Deferred[T]:
    """
    Run C{function(*args)} at once, in the caller's thread: what unit tests
    give as the thread runner of shells and transfers.
    """
    return maybeDeferred(function, *args)


class SeenFTPSService(FTPSService):
    """
    An L{FTPSService} that keeps the port it listens on.
    """

    #: The port, once the service listens.
    listeningPort: IListeningPort | None = None

    def _listening(self, port: IListeningPort) -> None:
        self.listeningPort = port
        super()._listening(port)


class FTPSServiceCase(TestCase):
    """
    Runs an L{FTPSService} on the real reactor, on a provisional
    certificate for L{NAME} whose signer the clients trust.
    """

    implicit = False
    #: The loopback address the service listens on.
    host = "127.0.0.1"

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.served = makeTree(base)
        self.usersFile = os.path.join(base, "users")
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).replace(b"$2b$", b"$2y$")
        with open(self.usersFile, "wb") as file:
            file.write(b"# accounts\n" + USER.encode() + b":" + hashed + b"\n")
        self.signer = newSigner()
        self.caFile = os.path.join(base, "ca.pem")
        with open(self.caFile, "wb") as file:
            file.write(self.signer.certificate.public_bytes(Encoding.PEM))
        #: The port of the service started last, for the clients: each
        #: start listens on a free port the system picks.
        self.port = 0

    def startService(self, endpoint: str | None = None, **ftps: Any) -> FTPSService:
        """
        Start the service with the L{FTPSOptions} C{ftps} changes, on the
        C{endpoint} description if given, else on L{host} and a free port
        (the service stopped before may not have let its own go yet); when
        it listens, it does when this returns, and C{port} is its port.
        """
        settings: dict[str, Any] = {
            "implicit": self.implicit,
            "usersFile": self.usersFile,
            "writable": True,
        }
        settings.update(ftps)
        options = ServiceOptions(
            section="services/ftp",
            type="ftps",
            name="ftp",
            address=self.host,
            port=0,
            endpoint=endpoint,
            domains=(NAME,),
            path=self.served,
            ftps=FTPSOptions(**settings),
        )
        service = SeenFTPSService(options, reactor)
        service.consumer.useCertificate(provisionalFor(self.signer, (NAME,)))
        service.startService()
        self.addCleanup(service.stopService)
        # With the certificate there, the service listens at once, or not
        # at all (port 0 then: clients reach no other test's server).
        port = service.listeningPort
        self.port = 0 if port is None else port.getHost().port
        return service

    def client(
        self, resume: bool = True, maximumVersion: ssl.TLSVersion | None = None
    ) -> ResumingFTPS:
        """
        A connected client (explicit or implicit as the case), not logged
        in, on TLS up to C{maximumVersion} if given; closed at the end of
        the test.
        """
        kind = ImplicitFTPS if self.implicit else ResumingFTPS
        context = clientContext(self.caFile)
        if maximumVersion is not None:
            context.maximum_version = maximumVersion
        client = kind(context, NAME, resume=resume)
        client.connect(self.host, self.port)
        self.addCleanup(client.close)
        return client

    def loggedIn(
        self,
        user: str = USER,
        password: str = PASSWORD,
        resume: bool = True,
        maximumVersion: ssl.TLSVersion | None = None,
    ) -> ResumingFTPS:
        """
        A client logged in with PROT P.
        """
        client = self.client(resume, maximumVersion)
        client.login(user, password)
        client.prot_p()
        return client

    def inThread(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run the blocking client code C{function} in a thread while the
        reactor serves.
        """
        return deferToThread(function, *args)
