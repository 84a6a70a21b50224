"""
The operations command and the account options against a real pebble:
status, renew, revoke, account show, rollover and deactivate, with and
without a running server; existing accounts, external account binding and
contacts.
"""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import cli, statusrows
from letsencrypt_resource.cli import run
from letsencrypt_resource.config import loadConfiguration
from letsencrypt_resource.control import StateDirectoryLocked, StateLock
from letsencrypt_resource.host import ServerService
from letsencrypt_resource.keys import generateKey, keyToPEM
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.operations import OperationError, Operations, serialHex
from letsencrypt_resource.testing import runUntilFired
from letsencrypt_resource.testing.pebble import certificateStatus
from tests.helpers.operationscase import OperationsCase
from tests.helpers.resourcecase import ResourceTestCase
from tests.helpers.statedir import StateDirectory

EAB_KID = "kid-1"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


class WithServerTests(OperationsCase):
    """
    The command talking to a running server.
    """

    async def test_statusTableAndJSON(self) -> None:
        """
        C{status} lists every certificate with what each service serves,
        its issuer, expiry, and when and why it renews; C{--json} gives the
        same for machines.
        """
        await self.setUpConfiguration()
        await self.startServer()
        table = await self.command("status")
        self.assertNotIn("No server is running", table)
        self.assertIn("files.example.test, www.example.test", table)
        self.assertIn("files-https: CA, files-again-https: CA", table)
        self.assertIn("Pebble Intermediate", table)
        self.assertRegex(table, r"renews at \S+ because most of its lifetime will have passed")
        rows = await self.command("status", "--json")
        self.assertEqual(
            sorted(tuple(r["names"]) for r in rows),
            [("files.example.test", "www.example.test"), ("reports.example.test",)],
        )
        for row in rows:
            self.assertFalse(row["provisional"])
            self.assertTrue(row["server_running"])
            self.assertEqual(set(row["serving"].values()), {"ca"})
            self.assertGreater(row["days_left"], 1000)
            self.assertIsNone(row["last_error"])

    async def test_renewForce(self) -> None:
        """
        C{renew --force DOMAIN} renews that set in the running server, which
        serves the new certificate at once, and says so; other sets are
        untouched.
        """
        await self.setUpConfiguration()
        await self.startServer()
        before = await self.served(2, "reports.example.test")
        files = await self.served(0, "files.example.test")
        said = await self.command("renew", "--force", "reports.example.test")
        self.assertRegex(said, r"^reports\.example\.test: renewed, valid until \S+\n$")
        after = await self.served(2, "reports.example.test")
        self.assertNotEqual(after.serial_number, before.serial_number)
        self.assertEqual((await self.served(0, "files.example.test")), files)

    async def test_revoke(self) -> None:
        """
        C{revoke DOMAIN --reason keyCompromise} revokes the certificate at
        the CA and puts a new one in service, for a new key even with
        C{reuse_key = yes}.
        """
        await self.setUpConfiguration(extra="reuse_key = yes\n")
        await self.startServer()
        before = await self.served(2, "reports.example.test")
        row = await self.command("revoke", "reports.example.test", "--reason", "keyCompromise")
        self.assertEqual(int(row["revoked"], 16), before.serial_number)
        status = await certificateStatus(self.testCA, before.serial_number)
        self.assertEqual(status, "Revoked")
        after = await self.served(2, "reports.example.test")
        self.assertNotEqual(after.serial_number, before.serial_number)
        self.assertNotEqual(
            after.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
            before.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        )

    async def test_renewNotDue(self) -> None:
        """
        C{renew} when nothing is due says so for each set, with when and
        why it will renew, and exits with 0.
        """
        await self.setUpConfiguration()
        await self.startServer()
        said = await self.command("renew")
        self.assertEqual(len(said.splitlines()), 2)
        self.assertRegex(
            said,
            r"reports\.example\.test: not due, renews at \S+ because most of its "
            "lifetime will have passed\n",
        )
        rows = await self.command("renew", "--json")
        self.assertEqual({row["outcome"] for row in rows}, {"not due"})

    async def test_unknownDomain(self) -> None:
        """
        A domain no service has is a clear error.
        """
        await self.setUpConfiguration()
        await self.startServer()
        await self.command("renew", "nope.example.test", status=1)

    async def test_secondServerRefused(self) -> None:
        """
        A second server on the same state directory is refused.
        """
        await self.setUpConfiguration()
        await self.startServer()
        error = self.assertRaises(
            StateDirectoryLocked, ServerService, loadConfiguration(self.path), reactor
        )
        self.assertIn("in use by another process", str(error))

    async def test_statusWhileServerStarts(self) -> None:
        """
        A server holds the state directory's lock before it listens on its
        control socket: C{status} run in between waits for it to answer
        instead of failing on the lock.
        """
        await self.setUpConfiguration()
        server = ServerService(loadConfiguration(self.path), reactor)
        self.addCleanup(server.stopService)
        asked = Deferred.fromCoroutine(self.command("status", "--json"))
        await deferLater(reactor, 0.5, server.startService)
        rows = await asked
        self.assertEqual(len(rows), 2)
        self.assertTrue(all(row["server_running"] for row in rows))

    async def test_lockedWithoutAnswer(self) -> None:
        """
        When the lock stays held and no control socket answers, the command
        fails after L{cli.SERVER_START_WAIT} seconds, naming the holder.
        """
        await self.setUpConfiguration()
        self.patch(cli, "SERVER_START_WAIT", 0.5)
        lock = StateLock(loadConfiguration(self.path).resource.stateDirectory)
        lock.acquire()
        self.addCleanup(lock.release)
        err = io.StringIO()
        code = await run(reactor, ["--config", self.path, "status"], io.StringIO(), err)
        self.assertEqual(code, 1)
        self.assertIn(f"another process (pid {os.getpid()}) holds the state", err.getvalue())
        self.assertIn("within 0.5 s", err.getvalue())

    async def test_accountShowAndDeactivate(self) -> None:
        """
        C{account show} gives the account's URL, status and contacts;
        C{account deactivate} ends it at the CA.
        """
        await self.setUpConfiguration(extra="contact_email = ops@example.test\n")
        await self.startServer()
        shown = await self.command("account", "show")
        self.assertEqual(shown["status"], "valid")
        self.assertEqual(shown["contacts"], ["mailto:ops@example.test"])
        self.assertTrue(shown["url"].startswith(self.testCA.directoryURL.rsplit("/", 1)[0]))
        gone = await self.command("account", "deactivate")
        self.assertEqual(gone["status"], "deactivated")
        self.assertEqual(gone["url"], shown["url"])


class AloneTests(OperationsCase):
    """
    The command with no server running.
    """

    async def test_statusAndRenewAlone(self) -> None:
        """
        Without a server, C{status} reads the state and C{renew --force}
        gets new certificates itself, answering the challenges.
        """
        await self.setUpConfiguration()
        server = await self.startServer()
        await server.stopService()
        rows = await self.command("status", "--json")
        before = {tuple(r["names"]): r["not_after"] for r in rows}
        renewed = await self.command("renew", "--force", "--json")
        self.assertEqual(len(renewed), 2)
        for row in renewed:
            self.assertEqual(row["outcome"], "renewed")
            self.assertFalse(row["server_running"])
            self.assertIsNone(row["last_error"])
        server = await self.startServer()
        rows = await self.command("status", "--json")
        self.assertEqual(len(rows), len(before))


class RolloverTests(OperationsCase):
    """
    Account key rollover, which needs pebble 2.10.
    """

    def setUp(self) -> None:
        super().setUp()
        self.requireModern()

    async def test_rollover(self) -> None:
        """
        C{account rollover} changes the account key at the CA and in the
        state; the account and its URL stay, and orders go on working.
        """
        await self.setUpConfiguration(modern=True)
        await self.startServer()
        before = await self.command("account", "show")
        after = await self.command("account", "rollover")
        self.assertEqual(after["url"], before["url"])
        self.assertNotEqual(after["key_thumbprint"], before["key_thumbprint"])
        [row] = await self.command("renew", "--force", "--json", "reports.example.test")
        self.assertIsNone(row["last_error"])
        self.assertFalse(row["provisional"])


class AccountOptionTests(OperationsCase):
    """
    The account options, each against pebble.
    """

    async def test_existingAccountKey(self) -> None:
        """
        With C{account_key}, the resource uses the account of that key, and
        a key with no account is a clear error naming the option.
        """
        await self.setUpConfiguration()
        server = await self.startServer()
        first = await self.command("account", "show")
        await server.stopService()
        keyFile = os.path.join(self.directory, "account.pem")
        statePath = os.path.join(self.directory, "state")
        record = StateDirectory(statePath).loadAccount(self.testCA.directoryURL)
        with open(keyFile, "wb") as stream:
            stream.write(keyToPEM(record.key))
        with open(self.path) as stream:
            text = stream.read().replace(
                "agree_tos = yes\n", f"agree_tos = yes\naccount_key = {keyFile}\n"
            )
        fresh = text.replace("state_directory = state", "state_directory = state2")
        with open(self.path, "w") as stream:
            stream.write(fresh)
        shown = await self.command("account", "show")
        self.assertEqual(shown["url"], first["url"])
        with open(keyFile, "wb") as stream:
            stream.write(keyToPEM(generateKey("ecdsa-p256")))
        with open(self.path, "w") as stream:
            stream.write(fresh.replace("state_directory = state2", "state_directory = state3"))
        out = io.StringIO()
        self.assertEqual(await run(reactor, ["--config", self.path, "account", "show"], out), 1)

    async def test_externalAccountBinding(self) -> None:
        """
        A CA that requires EAB refuses an account without it, with an error
        naming the options, and accepts one bound with C{eab_kid} and
        C{eab_hmac_key}.
        """
        await self.setUpConfiguration(
            extraConfig={
                "externalAccountBindingRequired": True,
                "externalAccountMACKeys": {EAB_KID: EAB_KEY},
            }
        )
        server = await self.startServer()
        [row, _] = await self.command("status", "--json")
        self.assertIn("option 'eab_kid'", row["last_error"])
        await server.stopService()
        with open(self.path) as stream:
            text = stream.read()
        with open(self.path, "w") as stream:
            stream.write(
                text.replace(
                    "agree_tos = yes\n",
                    f"agree_tos = yes\neab_kid = {EAB_KID}\neab_hmac_key = {EAB_KEY}\n",
                )
            )
        await self.startServer()
        for row in await self.command("status", "--json"):
            self.assertFalse(row["provisional"], row)

    async def test_termsMustBeAgreed(self) -> None:
        """
        Without C{agree_tos = yes}, no account is created and the error
        names the option and the CA's terms.
        """
        await self.setUpConfiguration()
        with open(self.path) as stream:
            text = stream.read()
        with open(self.path, "w") as stream:
            stream.write(text.replace("agree_tos = yes\n", ""))
        await self.startServer()
        rows = await self.command("status", "--json")
        for row in rows:
            self.assertIn("option 'agree_tos'", row["last_error"])
            self.assertTrue(row["provisional"])

    async def test_contactsUpdated(self) -> None:
        """
        Contacts are sent at registration and updated when they change.
        """
        await self.setUpConfiguration(extra="contact_email = one@example.test\n")
        server = await self.startServer()
        self.assertEqual(
            (await self.command("account", "show"))["contacts"], ["mailto:one@example.test"]
        )
        await server.stopService()
        with open(self.path) as stream:
            text = stream.read()
        with open(self.path, "w") as stream:
            stream.write(text.replace("one@example.test", "two@example.test, three@example.test"))
        await self.startServer()
        shown = await self.command("account", "show")
        self.assertEqual(
            sorted(shown["contacts"]),
            ["mailto:three@example.test", "mailto:two@example.test"],
        )


class FailedActionTests(ResourceTestCase):
    """
    An operation whose action failed is an error, on the fake CA: the
    command then exits with 1, whether it talks to a server or works
    alone, since both run these L{Operations}.
    """

    def operations(self) -> Operations:
        return Operations(self.start(), self.reactor)

    def test_renewFailed(self) -> None:
        """
        C{renew --force} of a set whose order fails raises an error naming
        the set and the CA's problem; the other set asked for is renewed.
        """
        operations = self.operations()
        self.server.refuse.add("reports.example.test")
        before = self.consumers["files"].received[-1]
        renewing = operations.renew([], force=True)
        error = self.assertRaises(OperationError, runUntilFired, self.reactor, renewing)
        self.assertIn("the renewal failed for 1 of the 2 sets asked for", str(error))
        self.assertIn("reports.example.test: ", str(error))
        self.assertIn("unauthorized", str(error))
        self.assertIsNot(self.consumers["files"].received[-1], before)

    def test_renewNothingDue(self) -> None:
        """
        C{renew} without C{--force} of a set that is not due, even one
        waiting after failures, does nothing and is no error.
        """
        operations = self.operations()
        self.server.refuse.add("reports.example.test")
        with self.assertRaises(OperationError):
            runUntilFired(self.reactor, operations.renew(["reports.example.test"], True))
        [row] = runUntilFired(self.reactor, operations.renew(["reports.example.test"], False))
        self.assertEqual(row["failures"], 1)

    def test_revokeReplacementFailed(self) -> None:
        """
        C{revoke} whose replacement order fails raises an error that says
        the certificate is revoked and the services keep it for now.
        """
        operations = self.operations()
        issued = self.consumers["reports"].received[-1]
        self.server.refuse.add("reports.example.test")
        revoking = operations.revoke("reports.example.test", "superseded")
        error = self.assertRaises(OperationError, runUntilFired, self.reactor, revoking)
        self.assertIn(
            f"the certificate with serial {serialHex(issued.certificate.serial_number)} of "
            "reports.example.test is revoked (superseded), but its replacement "
            "failed: reports.example.test: ",
            str(error),
        )
        self.assertEqual(len(self.server.revoked), 1)
        self.assertIs(self.consumers["reports"].received[-1], issued)


class FailedCommandTests(OperationsCase):
    """
    The command's exit status and message when what it asked for failed,
    against pebble, with and without a running server.
    """

    async def failedRenewal(self) -> str:
        """
        Stop the CA, run C{renew --force}: status 1; return its message.
        """
        await self.testCA.stop()
        out, err = io.StringIO(), io.StringIO()
        code = await run(reactor, ["--config", self.path, "renew", "--force"], out, err)
        self.assertEqual(code, 1, out.getvalue())
        self.assertEqual(out.getvalue(), "")
        return err.getvalue()

    async def test_renewFailedWithServer(self) -> None:
        """
        Through a running server, a forced renewal whose orders fail exits
        with 1 and names each set that failed.
        """
        await self.setUpConfiguration()
        await self.startServer()
        message = await self.failedRenewal()
        self.assertIn("error: the renewal failed for 2 of the 2 sets asked for", message)
        self.assertIn("reports.example.test: ", message)

    async def test_renewFailedAlone(self) -> None:
        """
        Working alone, a forced renewal whose orders fail exits with 1 too.
        """
        await self.setUpConfiguration()
        server = await self.startServer()
        await server.stopService()
        message = await self.failedRenewal()
        self.assertIn("error: the renewal failed for 2 of the 2 sets asked for", message)
        self.assertIn("files.example.test, www.example.test: ", message)


class StatusRowTests(ResourceTestCase):
    """
    What C{status} says of one set, on the fake CA.
    """

    def test_nextCheckIsTheRealRetry(self) -> None:
        """
        The next check shown is when the next attempt may really start: a
        back-off that runs past the emergency time ends there.
        """
        operations = Operations(self.start(), self.reactor)
        [certificate] = operations.select(["reports.example.test"])
        now = self.reactor.seconds()
        certificate.failures = 3
        certificate.lastFailure = now
        certificate.nextAttempt = now + 80 * 86400
        [row] = [r for r in operations.status() if r["names"] == ["reports.example.test"]]
        self.assertEqual(row["next_check"], statusrows.isoTime(certificate.urgentSince()))
        self.assertLess(certificate.urgentSince(), certificate.nextAttempt)


class OutcomeTests(ResourceTestCase):
    """
    What C{renew}, C{revoke} and C{status} tell the operator, on the fake
    CA.
    """

    def test_renewSaysWhatItDid(self) -> None:
        """
        Each set C{renew} looked at says whether it was renewed or was not
        due, with its plan.
        """
        operations = Operations(self.start(), self.reactor)
        [row] = runUntilFired(self.reactor, operations.renew(["reports.example.test"], False))
        self.assertEqual(row["outcome"], "not due")
        self.assertEqual(row["reason"], "lifetime")
        self.assertFalse(row["retry"])
        [row] = runUntilFired(self.reactor, operations.renew(["reports.example.test"], True))
        self.assertEqual(row["outcome"], "renewed")

    def test_revokeSerialInHex(self) -> None:
        """
        C{revoke} gives the serial number revoked in hex, as C{openssl x509
        -serial} does, and its replacement order says the certificate was
        revoked, not that a renewal was asked for.
        """
        operations = Operations(self.start(), self.reactor)
        issued = self.consumers["reports"].received[-1]
        row = runUntilFired(self.reactor, operations.revoke("reports.example.test", "superseded"))
        self.assertEqual(row["revoked"], serialHex(issued.certificate.serial_number))
        self.assertEqual(row["reason"], "superseded")
        [text] = [t for t in self.eventTexts(20155) if "reports" in t][-1:]
        self.assertTrue(text.endswith(": its certificate was revoked."), text)

    def test_serialHex(self) -> None:
        """
        Serial numbers are upper-case hex with an even number of digits.
        """
        self.assertEqual(serialHex(0xABC), "0ABC")
        self.assertEqual(serialHex(0x1F), "1F")

    def test_serving(self) -> None:
        """
        In the server, each row says what each service of the set serves;
        without one, that no server runs and nothing is served.
        """
        resource = self.start()
        [row] = [
            r
            for r in Operations(resource, self.reactor).status()
            if r["names"] == ["reports.example.test"]
        ]
        self.assertTrue(row["server_running"])
        self.assertEqual(row["serving"], {"reports-https": "ca"})
        [row] = [
            r
            for r in Operations(resource, self.reactor, serverRunning=False).status()
            if r["names"] == ["reports.example.test"]
        ]
        self.assertFalse(row["server_running"])
        self.assertEqual(row["serving"], {})


class SelectTests(SynchronousTestCase):
    """
    L{Operations.select} finds the sets holding the names asked for.
    """

    def test_manyNamesLinear(self) -> None:
        """
        Asked for every name of thousands of sets, C{select} finds each by
        its name, not by comparing it with every set, and each set it found
        with those already chosen (both quadratic): a set is compared at
        most once per name it holds; each set is chosen once, in the order
        of the names; an unknown name is refused.
        """
        compared = []

        class Counted(ManagedCertificate):
            """
            A domain set that counts how often it is compared.
            """

            def __eq__(self, other: object) -> bool:
                compared.append(True)
                return self is other

            __hash__ = ManagedCertificate.__hash__

        sets = [Counted((f"s{i}.example.test", f"www.s{i}.example.test")) for i in range(2000)]
        resource = SimpleNamespace(managed={frozenset(c.domains): c for c in sets})
        operations = Operations(resource, Clock())  # type: ignore[arg-type]
        names = [name.upper() for c in reversed(sets) for name in c.domains]
        self.assertEqual(operations.select(names), sets[::-1])
        self.assertLessEqual(len(compared), len(names))
        self.assertEqual(operations.select([]), sets)
        self.assertRaises(OperationError, operations.select, ["other.example.test"])
