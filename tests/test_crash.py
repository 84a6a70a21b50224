"""
Crash consistency: whatever state a crash, a full disk or a damaged disk
leaves in the state directory, the resource starts, every service gets a
certificate at once (the stored one when it is intact), and what is damaged
is replaced.

The SIGKILL-during-issuance runs of the real C{twistd} are the slow
L{tests.test_slow_crash}; here each damage a crash or a disk could leave is
applied to one file of a good state, on a fake clock against the in-memory
CA.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from typing import Any

from twisted.logger import formatEvent

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.storage.interface import MAX_VALUE
from letsencrypt_resource.testing import advanceThrough, runUntilFired
from tests.helpers.resourcecase import FILES, REPORTS, ResourceTestCase
from tests.helpers.statedir import StateDirectory

ACME_URL = "https://acme.test/directory"


def _seeded(data: bytes) -> bytes:
    rng = random.Random(len(data))
    return bytes(rng.randrange(256) for _ in data)


#: What a crash or a bad disk can leave in a file, by name.
DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "cut at a third": lambda data: data[: len(data) // 3],
    "cut at two thirds": lambda data: data[: 2 * len(data) // 3],
    "last byte gone": lambda data: data[:-1],
    "zeros": lambda data: b"\0" * len(data),
    "garbage": _seeded,
    "doubled": lambda data: data + data,
    "text appended": lambda data: data + b"\nbroken\n",
    "padded past the size bound": lambda data: data + b" " * MAX_VALUE,
    "nested too deep": lambda data: b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


class DamagedStateTests(ResourceTestCase):
    """
    A good state, issued and stopped, then damaged one file at a time.
    """

    def setUp(self) -> None:
        super().setUp()
        self.state = os.path.abspath(self.mktemp())
        self.store = StateDirectory(self.state)
        resource = self.start()
        resource.stopService()
        self.issued = {name: c.received[-1] for name, c in self.consumers.items()}
        [account] = os.listdir(os.path.join(self.state, "accounts"))
        self.files = {
            "account": os.path.join("accounts", account),
            "certificate": os.path.join("certificates", "reports.example.test.pem"),
            "renewal state": os.path.join("renewal", "reports.example.test.json"),
            "signer": "provisional-signer.pem",
        }
        for relative in self.files.values():
            self.assertTrue(os.path.isfile(os.path.join(self.state, relative)), relative)

    def restartOn(self, change: Callable[[str], None]) -> tuple[Any, list[str]]:
        """
        Copy the good state, apply C{change} to the copy's folder, start a
        resource on it and let its first attempts end.

        @return: the resource and the problems seen: an exception out of
            start, a consumer without a certificate, a traceback logged.
        """
        copy = os.path.abspath(self.mktemp())
        shutil.copytree(self.state, copy)
        change(copy)
        for consumer in self.consumers.values():
            consumer.received.clear()
        first = len(self.events)
        self.store = StateDirectory(copy)
        resource = self.makeResource()
        problems = []
        try:
            resource.startService()
            runUntilFired(self.reactor, resource.whenSettled())
        except Exception as error:
            problems.append(f"start raised {error!r}")
        for name, consumer in self.consumers.items():
            if not consumer.received:
                problems.append(f"{name} has no certificate")
        for event in self.events[first:]:
            if "log_failure" in event:
                problems.append(formatEvent(event) + " " + repr(event["log_failure"].value))
        self.addCleanup(lambda: resource.stopService() if resource.running else None)
        return resource, problems

    def damage(self, which: str, how: Callable[[bytes], bytes]) -> Callable[[str], None]:
        def change(copy: str) -> None:
            path = os.path.join(copy, self.files[which])
            with open(path, "rb") as stream:
                data = stream.read()
            with open(path, "wb") as stream:
                stream.write(how(data))

        return change

    def assertServed(self, intact: tuple[str, ...]) -> None:
        """
        The consumers of the sets in C{intact} got their stored certificate
        first; every consumer ends up on a CA-issued certificate for its
        names.
        """
        for name in intact:
            first = self.consumers[name].received[0]
            self.assertEqual(first.certificate, self.issued[name].certificate, name)
        advanceThrough(self.reactor, 3600)
        for name, consumer in self.consumers.items():
            current = consumer.received[-1]
            self.assertFalse(current.provisional, name)
            self.assertEqual(set(current.domains), set(consumer.domains), name)

    def test_damagedCertificate(self) -> None:
        """
        A damaged certificate file: its services start on a provisional
        certificate (or on the stored one, when the damage left it
        readable and whole) and get a new one; the others keep theirs.
        """
        failures = []
        for description, how in DAMAGES.items():
            _, problems = self.restartOn(self.damage("certificate", how))
            failures.extend(f"{description}: {p}" for p in problems)
            if not problems:
                first = self.consumers["reports"].received[0]
                if not first.provisional:
                    self.assertEqual(
                        first.certificate, self.issued["reports"].certificate, description
                    )
                    self.assertEqual(first.keyPEM, self.issued["reports"].keyPEM)
                self.assertServed(("files", "files-ftps"))
        self.assertEqual(failures, [])

    def test_damagedRenewalState(self) -> None:
        """
        A damaged renewal state is ignored: the certificate beside it is
        still served, and not renewed before it is due.
        """
        failures = []
        for description, how in DAMAGES.items():
            orders = self.server.ordersCreated
            _, problems = self.restartOn(self.damage("renewal state", how))
            failures.extend(f"{description}: {p}" for p in problems)
            if not problems:
                self.assertServed(("files", "files-ftps", "reports"))
                if self.server.ordersCreated != orders:
                    failures.append(f"{description}: a new order")
        self.assertEqual(failures, [])

    def test_damagedSigner(self) -> None:
        """
        A damaged provisional signer is replaced when a provisional
        certificate is needed.
        """
        failures = []
        for description, how in DAMAGES.items():

            def change(copy: str, how: Callable[[bytes], bytes] = how) -> None:
                self.damage("signer", how)(copy)
                os.remove(os.path.join(copy, self.files["certificate"]))

            _, problems = self.restartOn(change)
            failures.extend(f"{description}: {p}" for p in problems)
            if not problems:
                self.assertTrue(self.consumers["reports"].received[0].provisional)
                self.assertServed(("files", "files-ftps"))
        self.assertEqual(failures, [])

    def test_damagedAccount(self) -> None:
        """
        A damaged account file: the services start on their stored
        certificates, and attempts fail with a 20017 naming the file, not a
        traceback.
        """
        failures = []
        for description, how in DAMAGES.items():
            first = len(self.events)
            resource, problems = self.restartOn(self.damage("account", how))
            failures.extend(f"{description}: {p}" for p in problems)
            if problems:
                continue
            for name in ("files", "files-ftps", "reports"):
                received = self.consumers[name].received[0]
                self.assertEqual(received.certificate, self.issued[name].certificate)
            runUntilFired(self.reactor, resource.check(force=True))
            texts = [formatEvent(e) for e in self.events[first:] if e.get("event_id") == 20017]
            if not texts:
                failures.append(f"{description}: no 20017")
            for text in texts:
                if "accounts" not in text:
                    failures.append(f"{description}: {text}")
        self.assertEqual(failures, [])

    def test_leftoversOfInterruptedWrites(self) -> None:
        """
        Temporary files that a crash left beside the state (a write that
        never reached its rename) change nothing.
        """

        def change(copy: str) -> None:
            for relative in self.files.values():
                folder, name = os.path.split(os.path.join(copy, relative))
                with open(os.path.join(folder, f".{name}.99999.tmp"), "wb") as stream:
                    stream.write(b"half of a ")

        orders = self.server.ordersCreated
        _, problems = self.restartOn(change)
        self.assertEqual(problems, [])
        self.assertServed(("files", "files-ftps", "reports"))
        self.assertEqual(self.server.ordersCreated, orders)

    def test_folderWhereAFileShouldBe(self) -> None:
        """
        A folder in place of the certificate file (what a bad restore can
        leave): the set gets a new certificate... once the folder is moved
        away; meanwhile the rest runs.
        """

        def change(copy: str) -> None:
            path = os.path.join(copy, self.files["certificate"])
            os.remove(path)
            os.makedirs(path)

        _, problems = self.restartOn(change)
        self.assertEqual(problems, [])
        for name in ("files", "files-ftps"):
            first = self.consumers[name].received[0]
            self.assertEqual(first.certificate, self.issued[name].certificate)
        self.assertTrue(self.consumers["reports"].received[0].provisional)
        self.assertTrue(any("reports.example.test" in t for t in self.eventTexts(20017)))

    def test_keyAlgorithmDamaged(self) -> None:
        """
        Damage in a key's algorithm identifier, which makes cryptography
        raise UnsupportedAlgorithm rather than ValueError, is handled like
        any other damage, in a certificate, the account and the signer.
        """
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        def flipOID(data: bytes) -> bytes:
            start = data.index(b"-----BEGIN PRIVATE KEY-----")
            for at in range(start + 28, len(data)):
                changed = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
                try:
                    load_pem_private_key(changed[start:], password=None)
                except UnsupportedAlgorithm:
                    return changed
                except ValueError:
                    continue
            raise AssertionError("no flip gives UnsupportedAlgorithm")

        def flipOIDInJSON(data: bytes) -> bytes:
            import json

            document = json.loads(data)
            document["key"] = flipOID(document["key"].encode()).decode("latin-1")
            return json.dumps(document).encode()

        failures = []
        for which, how in (
            ("certificate", flipOID),
            ("account", flipOIDInJSON),
        ):
            _, problems = self.restartOn(self.damage(which, how))
            failures.extend(f"{which}: {p}" for p in problems)

        def signer(copy: str) -> None:
            self.damage("signer", flipOID)(copy)
            os.remove(os.path.join(copy, self.files["certificate"]))

        _, problems = self.restartOn(signer)
        failures.extend(f"signer: {p}" for p in problems)
        self.assertEqual(failures, [])


class StoredSetsTests(ResourceTestCase):
    """
    What the store holds must match what it is asked for.
    """

    def test_storedCertificateForOtherNames(self) -> None:
        """
        A certificate file holding another set's certificate (a restore
        gone wrong) is never served for this set's names.
        """
        self.state = os.path.abspath(self.mktemp())
        self.store = StateDirectory(self.state)
        resource = self.start()
        resource.stopService()
        folder = os.path.join(self.state, "certificates")
        shutil.copyfile(
            os.path.join(folder, "_".join(FILES) + ".pem"),
            os.path.join(folder, "_".join(REPORTS) + ".pem"),
        )
        self.consumers["reports"].received.clear()
        self.start()
        for certificate in self.consumers["reports"].received:
            self.assertEqual(certificate.domains, REPORTS)
        self.assertTrue(isinstance(self.consumers["reports"].received[-1], CertifiedKey))
