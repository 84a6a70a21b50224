"""
Tests for L{letsencrypt_resource.ftps}: the FTPS service on loopback,
explicit and implicit, with Python's C{ftplib} as the client.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import socket
import ssl

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.logger import capturedLogs, formatEvent

from letsencrypt_resource import events
from letsencrypt_resource.alpn import ACME_IDENTIFIER, ALPNAnswers
from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.challenge import ChallengeResponder
from tests.helpers import countSignatures, provisionalFor
from tests.helpers.ftpscase import CONTENT, NAME, PASSWORD, USER, FTPSServiceCase, retrieve


class _Sessions:
    """
    The tests that hold for explicit and implicit FTPS alike.
    """

    async def test_loginListDownload(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        An account logs in to its own folder, lists it (without links) and
        downloads a file, resuming the control session's TLS session.
        """
        self.startService()

        def session() -> tuple[list[str], bytes, str]:
            client = self.loggedIn()
            names = client.nlst()
            received = io.BytesIO()
            client.retrbinary("RETR own.txt", received.write)
            return names, received.getvalue(), client.pwd()

        names, data, pwd = await self.inThread(session)
        self.assertEqual((names, data, pwd), (["own.txt"], CONTENT, "/"))

    async def test_emptyFile(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        An empty file is downloaded: its data connection is closed after
        its TLS handshake, not under it.
        """
        open(os.path.join(self.served, USER, "empty"), "wb").close()
        self.startService()

        def session() -> bytes:
            client = self.loggedIn()
            return retrieve(client, "empty")

        self.assertEqual(await self.inThread(session), b"")

    async def test_quietTransfers(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Transfers log nothing (Twisted's FTP logged 8 lines per transfer:
        its data factory and passive port starting and stopping).
        """
        self.startService()
        client = await self.inThread(self.loggedIn)

        def transfers() -> None:
            for _ in range(3):
                client.retrbinary("RETR own.txt", io.BytesIO().write)
                client.storbinary("STOR new.bin", io.BytesIO(CONTENT))

        with capturedLogs() as logged:
            await self.inThread(transfers)
        self.assertEqual([formatEvent(event) for event in logged], [])

    async def test_upload(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        An upload is stored under its name once complete, and no temporary
        file is left.
        """
        self.startService()

        def session() -> list[str]:
            client = self.loggedIn()
            client.storbinary("STOR new.bin", io.BytesIO(CONTENT * 100))
            return client.nlst()

        names = await self.inThread(session)
        folder = os.path.join(self.served, USER)
        with open(os.path.join(folder, "new.bin"), "rb") as file:
            self.assertEqual(file.read(), CONTENT * 100)
        self.assertEqual(sorted(names), ["new.bin", "own.txt"])
        self.assertEqual(
            sorted(os.listdir(folder)),
            ["inside-link", "new.bin", "outside-link", "own.txt", "secret-link"],
        )

    async def test_readOnly(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Without C{writable}, uploads, folders, renames and removals are
        refused.
        """
        self.startService(writable=False)

        def session() -> list[str]:
            client = self.loggedIn()
            refused = []
            for attempt in (
                lambda: client.storbinary("STOR x", io.BytesIO(b"x")),
                lambda: client.mkd("folder"),
                lambda: client.rename("own.txt", "moved.txt"),
                lambda: client.delete("own.txt"),
            ):
                try:
                    attempt()
                except ftplib.error_perm as error:
                    refused.append(str(error)[:3])
            return refused

        self.assertEqual(await self.inThread(session), ["550"] * 4)
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.served, USER)))[-2:], ["own.txt", "secret-link"]
        )

    async def test_anonymous(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        With C{anonymous}, anyone logs in as C{anonymous} to the served
        folder, read-only, even when accounts may write, and without the
        accounts' folders.
        """
        self.startService(anonymous=True)

        def session() -> tuple[list[str], str]:
            client = self.loggedIn("anonymous", "guest@example.com")
            names = client.nlst()
            try:
                client.storbinary("STOR x", io.BytesIO(b"x"))
            except ftplib.error_perm as error:
                return names, str(error)[:3]
            return names, "stored"

        self.assertEqual(await self.inThread(session), (["hello.txt"], "550"))

    async def test_anonymousOff(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Without C{anonymous}, the anonymous user is an unknown account.
        """
        self.startService()

        def session() -> None:
            self.loggedIn("anonymous", "guest@example.com")

        error = await self.assertFailure(self.inThread(session), ftplib.error_perm)
        self.assertTrue(str(error).startswith("530"))

    async def test_wrongPassword(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A wrong password, or an unknown account, gets 530 and event 20233.
        """
        self.startService()

        def session(user: str, password: str) -> str:
            try:
                self.loggedIn(user, password)
            except ftplib.error_perm as error:
                return str(error)[:3]
            return "logged in"

        with capturedLogs() as logged:
            self.assertEqual(await self.inThread(session, USER, PASSWORD + "x"), "530")
            self.assertEqual(await self.inThread(session, "mallory", PASSWORD), "530")
        self.assertEqual(
            [e["user"] for e in logged if e.get("event_id") == events.FTPS_LOGIN_FAILED.id],
            [USER, "mallory"],
        )

    async def test_newestCertificate(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Each new session takes the newest certificate; a session started
        before a renewal goes on with its own, data connections included.
        """
        service = self.startService()
        first = service.consumer.tls.certifiedKey
        assert first is not None
        before = await self.inThread(self.loggedIn)
        renewed = provisionalFor(self.signer, (NAME,))
        service.consumer.useCertificate(renewed)
        after = await self.inThread(self.loggedIn)

        def presented(client: ftplib.FTP_TLS) -> bytes:
            return client.sock.getpeercert(binary_form=True)  # type: ignore[no-any-return]

        def download(client: ftplib.FTP_TLS) -> bytes:
            return retrieve(client, "own.txt")

        self.assertEqual(
            (presented(before), presented(after)),
            (
                first.certificate.public_bytes(Encoding.DER),
                renewed.certificate.public_bytes(Encoding.DER),
            ),
        )
        self.assertEqual(await self.inThread(download, before), CONTENT)
        self.assertEqual(await self.inThread(download, after), CONTENT)

    async def test_noUserChange(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A logged-in session cannot log in again (each login would hold a
        folder open): 530, and the session goes on as before.
        """
        self.startService(anonymous=True)

        def session() -> tuple[str, str]:
            client = self.loggedIn()
            try:
                client.sendcmd("USER anonymous")
            except ftplib.error_perm as error:
                return str(error)[:3], " ".join(client.nlst())
            return "changed", ""

        self.assertEqual(await self.inThread(session), ("530", "own.txt"))

    async def test_noProtP(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Without PROT P, no data connection is opened: 521.
        """
        self.startService()

        def session() -> str:
            client = self.client()
            client.login(USER, PASSWORD)
            try:
                client.nlst()
            except ftplib.error_perm as error:
                return str(error)[:3]
            return "listed"

        self.assertEqual(await self.inThread(session), "521")

    async def test_pathEscapes(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        No path leads out of the account's folder: not C{..}, not an
        absolute path, not a link to a file or a folder (even inside),
        not a hidden name.
        """
        self.startService(anonymous=True)

        def session() -> list[str]:
            client = self.loggedIn()
            outcomes = []
            for path in [
                "../hello.txt",
                "/../hello.txt",
                "secret-link",
                "outside-link/secret.txt",
                "inside-link",
                "../.hidden",
                "/etc/passwd",
                "own.txt/../../hello.txt",
            ]:
                try:
                    client.retrbinary(f"RETR {path}", lambda data: None)
                    outcomes.append(f"{path}: read")
                except ftplib.error_perm as error:
                    outcomes.append(f"{path}: {str(error)[:3]}")
            for folder in ["..", "outside-link", "/.."]:
                try:
                    client.cwd(folder)
                    outcomes.append(f"cwd {folder}: {client.pwd()}")
                except ftplib.error_perm as error:
                    outcomes.append(f"cwd {folder}: {str(error)[:3]}")
            return outcomes

        outcomes = await self.inThread(session)
        self.assertEqual(
            [outcome for outcome in outcomes if not outcome.endswith(("550", ": /"))], []
        )

    async def test_sessionReuseRequired(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A data connection that does not resume the control session's TLS
        session is closed before any data goes through: 522 and event
        20232.
        """
        self.startService()

        def session() -> str:
            client = self.loggedIn(resume=False)
            try:
                client.retrbinary("RETR own.txt", lambda data: None)
            except (ftplib.error_temp, ftplib.error_perm) as error:
                return str(error)[:3]
            except (ssl.SSLError, OSError):
                # The data connection was cut during its handshake; the
                # reply tells why.
                try:
                    client.getresp()
                except ftplib.error_perm as error:
                    return str(error)[:3]
            return "read"

        with capturedLogs() as logged:
            outcome = await self.inThread(session)
        self.assertEqual(outcome, "522")
        self.assertEqual(
            len([e for e in logged if e.get("event_id") == events.FTPS_DATA_NOT_RESUMED.id]), 1
        )

    async def test_sessionReuseRelaxed(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        With C{require_session_reuse = no}, a data connection with a new
        TLS session is served.
        """
        self.startService(requireSessionReuse=False)

        def session() -> bytes:
            client = self.loggedIn(resume=False)
            return retrieve(client, "own.txt")

        self.assertEqual(await self.inThread(session), CONTENT)

    async def test_truncatedUpload(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        An upload whose data connection ends without a TLS close_notify is
        not stored (426 and event 20234), and leaves no temporary file.
        """
        self.startService()

        def session() -> str:
            client = self.loggedIn()
            conn = client.transfercmd("STOR cut.bin")
            conn.sendall(CONTENT)
            # Close the TCP connection under TLS, without close_notify.
            socket.socket.shutdown(conn, socket.SHUT_RDWR)
            conn.close()
            try:
                return client.voidresp()
            except (ftplib.error_temp, ftplib.error_perm) as error:
                return str(error)[:3]

        with capturedLogs() as logged:
            self.assertEqual(await self.inThread(session), "426")
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.served, USER))),
            ["inside-link", "outside-link", "own.txt", "secret-link"],
        )
        self.assertEqual(
            len([e for e in logged if e.get("event_id") == events.FTPS_UPLOAD_FAILED.id]), 1
        )

    async def test_portStealing(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A data connection from another address than the control
        connection's peer is closed at once (event 20231); the client's own
        connection is then served.
        """
        self.startService()

        def session() -> tuple[bytes, bytes]:
            client = self.loggedIn()
            host, port = ftplib.parse227(client.sendcmd("PASV"))
            thief = socket.create_connection((host, port), 10, source_address=("127.0.0.2", 0))
            thief.settimeout(10)
            stolen = thief.recv(100)
            thief.close()
            conn = socket.create_connection((host, port), 10)
            client.putcmd("RETR own.txt")
            client.getresp()
            data = client.context.wrap_socket(
                conn, server_hostname=NAME, session=client.sock.session
            )
            received = b""
            while chunk := data.recv(65536):
                received += chunk
            data.close()
            client.voidresp()
            return stolen, received

        with capturedLogs() as logged:
            stolen, received = await self.inThread(session)
        self.assertEqual((stolen, received), (b"", CONTENT))
        self.assertEqual(
            [e["client"] for e in logged if e.get("event_id") == events.FTPS_DATA_WRONG_PEER.id],
            ["127.0.0.2"],
        )

    async def test_commandTooLong(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A command line over 1024 bytes gets 500 and the connection is
        closed.
        """
        self.startService()

        def session() -> tuple[str, str]:
            client = self.loggedIn()
            client.putcmd("CWD " + "a" * 2000)
            answer = client.getline()
            return answer[:3], client.file.readline()

        self.assertEqual(await self.inThread(session), ("500", ""))


class ExplicitFTPSTests(_Sessions, FTPSServiceCase):
    """
    Explicit FTPS: AUTH TLS on a plain control connection.
    """

    async def test_nothingBeforeAuth(self) -> None:
        """
        USER, PASS and other commands sent before AUTH TLS get 530; FEAT
        announces AUTH TLS.
        """
        self.startService(anonymous=True)

        def session() -> tuple[list[str], str]:
            client = ftplib.FTP()
            client.connect("127.0.0.1", self.port, timeout=10)
            refused = []
            for command in ["USER anonymous", "PASS x", "PASV", "RETR hello.txt"]:
                try:
                    client.sendcmd(command)
                except ftplib.error_perm as error:
                    refused.append(str(error)[:3])
            features = client.sendcmd("FEAT")
            client.close()
            return refused, features

        refused, features = await self.inThread(session)
        self.assertEqual(refused, ["530"] * 4)
        self.assertIn("AUTH TLS", features)

    async def test_noCommandInjection(self) -> None:
        """
        What a client sends in the clear behind AUTH TLS, in the same
        packet, is dropped, never taken as sent over TLS.
        """
        self.startService()

        def session() -> str:
            client = self.client()
            client.sock.sendall(b"AUTH TLS\r\nUSER alice\r\n")
            self.assertTrue(client.getline().startswith("234"))
            client.sock = client.context.wrap_socket(client.sock, server_hostname=NAME)
            client.file = client.sock.makefile("r", encoding=client.encoding)
            client.putline("NOOP")
            return client.getline()

        self.assertEqual((await self.inThread(session))[:3], "200")

    async def test_usersFileReread(self) -> None:
        """
        A reload reads the accounts again; a file that cannot be used then
        leaves the accounts in use (event 20235).
        """
        service = self.startService()
        hashed = bcrypt.hashpw(b"new password", bcrypt.gensalt(4))
        with open(self.usersFile, "wb") as file:
            file.write(USER.encode() + b":" + hashed + b"\n")
        service.reopenFolder()
        await self.inThread(self.loggedIn, USER, "new password")
        with open(self.usersFile, "wb") as file:
            file.write(b"mallory:plain\n")
        with capturedLogs() as logged:
            service.reopenFolder()
        [kept] = [e for e in logged if e.get("event_id") == events.FTPS_USERS_KEPT.id]
        self.assertEqual(
            kept["details"], "line 1 is not 'name:hash' with a bcrypt hash (htpasswd -B)"
        )
        await self.inThread(self.loggedIn, USER, "new password")

    async def test_usersFileLinkedIntoServed(self) -> None:
        """
        An accounts file that a link places inside the served folder stops
        the service from listening (event 20157).
        """
        linked = os.path.join(self.served, "users-link")
        os.rename(self.usersFile, linked)
        os.symlink(linked, self.usersFile)
        with capturedLogs() as logged:
            service = self.startService()
        [failed] = [e for e in logged if e.get("event_id") == 20157]
        self.assertIn("it lies in the served folder", failed["details"])
        self.assertIsNone(service._port)

    async def test_unusableKeyReported(self) -> None:
        """
        A certificate whose key, read only at its first use, cannot be
        used, with no earlier one in service, is reported to the resource
        at once (so that an FTPS-only set is ordered again), and AUTH TLS
        gets 431.
        """
        service = self.startService()
        told: list[CertifiedKey] = []
        service.consumer.reportUnusableTo(lambda domains, certifiedKey: told.append(certifiedKey))
        damaged = _unreadableKey(self.signer)
        service.consumer.useCertificate(damaged)

        def session() -> str:
            client = self.client()
            try:
                return client.auth()
            except ftplib.error_temp as error:
                return str(error)

        with capturedLogs():
            self.assertEqual(await self.inThread(session), "431 No certificate available.")
        self.assertEqual(told, [damaged])
        self.flushLoggedErrors(SSL.Error)

    async def test_unusableKeyAfterGood(self) -> None:
        """
        A certificate whose key cannot be used, after one that sessions
        used, leaves that one in service, and nothing is reported.
        """
        service = self.startService()
        told: list[CertifiedKey] = []
        service.consumer.reportUnusableTo(lambda domains, certifiedKey: told.append(certifiedKey))
        await self.inThread(self.loggedIn)
        service.consumer.useCertificate(_unreadableKey(self.signer))

        def session() -> list[str]:
            return self.loggedIn().nlst()

        with capturedLogs():
            self.assertEqual(await self.inThread(session), ["own.txt"])
        self.assertEqual(told, [])
        self.flushLoggedErrors(SSL.Error)


def _unreadableKey(signer: CertifiedKey) -> CertifiedKey:
    """
    A certificate for L{NAME} from C{signer}, read as stored with its key
    unchecked, whose key is no key.
    """
    bundle = provisionalFor(signer, (NAME,)).fullchainPEM
    return CertifiedKey.fromCheckedPEM(b"no key\n" + bundle, frozenset((NAME,)))


class ImplicitFTPSTests(_Sessions, FTPSServiceCase):
    """
    Implicit FTPS: TLS from the first byte.
    """

    implicit = True

    async def test_alpnValidation(self) -> None:
        """
        An implicit FTPS port answers a TLS-ALPN-01 validation handshake
        for a name with a pending challenge as an https port does: it
        selects C{acme-tls/1} and presents the validation certificate;
        sessions are served as before.
        """
        service = self.startService()
        responder = ChallengeResponder()
        responder.addALPN("tok", NAME, "tok.print")
        service.consumer.tls.answerALPN(ALPNAnswers(responder.lookupALPN, reactor))

        def validate() -> tuple[str | None, bytes]:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["acme-tls/1"])
            with socket.create_connection((self.host, self.port), 10) as plain:
                with context.wrap_socket(plain, server_hostname=NAME) as tls:
                    der = tls.getpeercert(binary_form=True)
                    return tls.selected_alpn_protocol(), der

        def session() -> list[str]:
            return self.loggedIn().nlst()

        protocol, der = await self.inThread(validate)
        identifier = x509.load_der_x509_certificate(der).extensions.get_extension_for_oid(
            ACME_IDENTIFIER
        )
        self.assertEqual(protocol, "acme-tls/1")
        self.assertEqual(
            identifier.value.value,  # type: ignore[attr-defined]
            b"\x04\x20" + hashlib.sha256(b"tok.print").digest(),
        )
        self.assertEqual(await self.inThread(session), ["own.txt"])

    async def test_plainConnectionSignsNothing(self) -> None:
        """
        A connection to an implicit FTPS port that sends FTP commands in
        the clear is closed at once, its session's TLS never made: the
        provisional certificate is not signed.
        """
        signed = countSignatures(self)
        self.startService()

        def connect() -> bytes:
            with socket.create_connection((self.host, self.port), 10) as plain:
                plain.sendall(b"USER anonymous\r\n")
                plain.settimeout(10)
                return plain.recv(100)

        self.assertEqual(await self.inThread(connect), b"")
        self.assertEqual(signed, [])

    async def test_validationNotASession(self) -> None:
        """
        A TLS-ALPN-01 validation connection on an implicit FTPS port never
        reaches the FTP protocol: no greeting, and the commands it sends
        after its handshake are not answered; the connection is closed.
        """
        service = self.startService()
        responder = ChallengeResponder()
        responder.addALPN("tok", NAME, "tok.print")
        service.consumer.tls.answerALPN(ALPNAnswers(responder.lookupALPN, reactor))

        def validate() -> bytes:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["acme-tls/1"])
            received = b""
            with socket.create_connection((self.host, self.port), 10) as plain:
                with context.wrap_socket(plain, server_hostname=NAME) as tls:
                    tls.settimeout(10)
                    try:
                        tls.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\nPWD\r\n".encode())
                        while chunk := tls.recv(4096):
                            received += chunk
                    except (OSError, ssl.SSLError):
                        pass
            return received

        self.assertEqual(await self.inThread(validate), b"")

    async def test_noCertificateQuiet(self) -> None:
        """
        Without a certificate it can present, an implicit FTPS service
        closes each connection at once with no traceback, and tells so in
        event 20241, a few times only.
        """
        service = self.startService()
        service.consumer.useCertificate(_unreadableKey(self.signer))

        def connect() -> list[str]:
            outcomes = []
            for _ in range(12):
                context = ssl.create_default_context(cafile=self.caFile)
                try:
                    with socket.create_connection((self.host, self.port), 10) as plain:
                        with context.wrap_socket(plain, server_hostname=NAME) as tls:
                            outcomes.append(tls.recv(100).decode())
                except (OSError, ssl.SSLError):
                    outcomes.append("closed")
            return outcomes

        with capturedLogs() as logged:
            self.assertEqual(await self.inThread(connect), ["closed"] * 12)
        refused = [event for event in logged if event.get("event_id") == 20241]
        self.assertTrue(0 < len(refused) < 12, len(refused))
        # The certificate that cannot be presented is logged once, with
        # its error; no connection logs a traceback.
        failures = [event["log_failure"] for event in logged if event.get("log_failure")]
        self.assertEqual([failure.type for failure in failures], [SSL.Error])
        self.flushLoggedErrors(SSL.Error)
