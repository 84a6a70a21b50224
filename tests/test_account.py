"""
Tests for L{letsencrypt_resource.account} and L{letsencrypt_resource.control}
against the in-memory fake CA.
"""

from __future__ import annotations

import os
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.iweb import IAgent
from zope.interface import implementer

from letsencrypt_resource.account import AccountError, connectAccount
from letsencrypt_resource.control import StateDirectoryLocked, StateLock
from letsencrypt_resource.keys import generateKey, keyToPEM
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.testing import MemoryStore, runUntilFired
from tests.helpers.resourcecase import (
    ACME_URL,
    REPORTS,
    ResourceTestCase,
    resourceOptions,
    synchronously,
)

EAB_KEY = b"0123456789abcdef0123456789abcdef"
EAB_KEY_TEXT = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"


class AccountTests(ResourceTestCase):
    """
    How the resource finds or creates its account.
    """

    def test_termsNotAgreed(self) -> None:
        """
        Without C{agree_tos}, no account is created where the CA publishes
        terms, and the error names the option and the terms.
        """
        self.start(agreeTOS=False)
        self.assertEqual(self.server.accountsCreated, 0)
        text = self.eventTexts(20017)[0]
        self.assertIn("option 'agree_tos'", text)
        self.assertIn("https://acme.test/terms", text)

    def test_noTermsNoAgreementNeeded(self) -> None:
        """
        A CA that publishes no terms needs no agreement.
        """
        self.server.termsOfService = False
        self.start(agreeTOS=False)
        self.assertEqual(self.server.accountsCreated, 1)

    def test_bindingRequired(self) -> None:
        """
        A CA that requires external account binding gets it from the
        options, and without them the error names the options.
        """
        self.server.externalAccountKeys = {"kid-1": EAB_KEY}
        resource = self.start()
        self.assertIn("option 'eab_kid'", self.eventTexts(20017)[0])
        self.assertEqual(self.server.accountsCreated, 0)
        resource.stopService()
        self.store.clear("renewal/")
        self.start(eabKid="kid-1", eabHMACKey=EAB_KEY_TEXT)
        self.assertEqual(self.server.accountsCreated, 1)

    def test_wrongBinding(self) -> None:
        """
        A binding the CA does not accept fails with the CA's problem.
        """
        self.server.externalAccountKeys = {"kid-1": EAB_KEY}
        self.start(eabKid="kid-1", eabHMACKey="c2VjcmV0")
        self.assertIn("unauthorized", self.eventTexts(20017)[0])

    def test_contacts(self) -> None:
        """
        Contacts are sent at registration, and a change is sent to the CA
        at the next start with event 20162.
        """
        resource = self.start(contacts=("mailto:a@example.test",))
        account = runUntilFired(self.reactor, Operations(resource, self.reactor).accountShow())
        self.assertEqual(account["contacts"], ["mailto:a@example.test"])
        resource.stopService()
        resource = self.start(contacts=("mailto:b@example.test",))
        account = runUntilFired(self.reactor, Operations(resource, self.reactor).accountShow())
        self.assertEqual(account["contacts"], ["mailto:b@example.test"])
        self.assertEqual(self.eventIDs().count(20162), 1)

    def test_existingAccountKey(self) -> None:
        """
        With C{account_key}, the account of that key is used and none is
        created; a key without an account is an error naming the option.
        """
        resource = self.start()
        [acmeURL] = self.store.accountURLs(ACME_URL)
        existing = self.store.loadAccount(acmeURL)
        resource.stopService()
        keyFile = self.mktemp()
        with open(keyFile, "wb") as stream:
            stream.write(keyToPEM(existing.key))
        self.store.clear("accounts/")
        self.start(accountKeyFile=keyFile)
        self.assertEqual(self.server.accountsCreated, 1)
        self.assertEqual(self.store.loadAccount(acmeURL).url, existing.url)
        with open(keyFile, "wb") as stream:
            stream.write(keyToPEM(generateKey("ecdsa-p256")))
        self.store.clear("accounts/")
        self.store.clear("certificates/")
        self.start(accountKeyFile=keyFile)
        self.assertIn("option 'account_key'", self.eventTexts(20017)[-1])
        self.assertEqual(self.server.accountsCreated, 1)

    def test_forgottenAccountRegisteredAgain(self) -> None:
        """
        When the CA forgot the account (a test CA restarted), a forced
        renewal registers the same key again and renews in the same
        attempt: it does not fail first (no 20017).
        """
        resource = self.start()
        [acmeURL] = self.store.accountURLs(ACME_URL)
        before = self.store.loadAccount(acmeURL)
        old = self.consumers["reports"].received[-1]
        self.server.forgetAccounts()
        only = [resource.managed[frozenset(REPORTS)]]
        runUntilFired(self.reactor, resource.check(force=True, only=only))
        self.assertNotIn(20017, self.eventIDs())
        self.assertEqual(self.server.accountsCreated, 2)
        self.assertIsNot(self.consumers["reports"].received[-1], old)
        after = self.store.loadAccount(acmeURL)
        self.assertEqual(keyToPEM(after.key), keyToPEM(before.key))
        self.assertNotEqual(after.url, before.url)


class OperationsTests(ResourceTestCase):
    """
    Account operations through L{Operations}.
    """

    def test_rolloverAndDeactivate(self) -> None:
        """
        Rollover changes the key at the CA and in the store; deactivation
        ends the account and leaves a new key for the next one.
        """
        resource = self.start()
        operations = Operations(resource, self.reactor)
        before = runUntilFired(self.reactor, operations.accountShow())
        after = runUntilFired(self.reactor, operations.accountRollover())
        self.assertEqual(after["url"], before["url"])
        self.assertNotEqual(after["key_thumbprint"], before["key_thumbprint"])
        [acmeURL] = self.store.accountURLs(ACME_URL)
        self.assertEqual(
            self.store.loadAccount(acmeURL).key.public_key().public_numbers(),
            resource._connection._client.accountKey.key.public_key().public_numbers(),
        )
        gone = runUntilFired(self.reactor, operations.accountDeactivate())
        self.assertEqual(gone["status"], "deactivated")
        self.assertIsNone(self.store.loadAccount(acmeURL).url)


class StateLockTests(SynchronousTestCase):
    """
    Tests for L{StateLock}.
    """

    def test_oneHolder(self) -> None:
        """
        A second lock on the same folder is refused, naming the holder's
        process, until the first is released.
        """
        directory = self.mktemp()
        first = StateLock(directory)
        first.acquire()
        error = self.assertRaises(StateDirectoryLocked, StateLock(directory).acquire)
        self.assertIn(f"pid {os.getpid()}", str(error))
        first.release()
        second = StateLock(directory)
        second.acquire()
        second.release()


@implementer(IAgent)
class UntrustedAgent:
    """
    An HTTP client whose every request fails as when the server's TLS
    certificate does not verify.
    """

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        reason = Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))
        return fail(ResponseNeverReceived([reason]))


class UntrustedServerTests(SynchronousTestCase):
    """
    An ACME server whose certificate does not verify: the error names the
    option C{acme_ca_file} and the URL.
    """

    def connect(self, **options: Any) -> str:
        """
        Connect the account with C{options}.

        @return: the error's text.
        """
        connecting = connectAccount(
            UntrustedAgent(),
            Clock(),
            resourceOptions(**options),
            MemoryStore().records,
            synchronously,
        )
        return str(self.failureResultOf(connecting, AccountError).value)

    def test_noCAFile(self) -> None:
        """
        Without C{acme_ca_file}, the error says the system's roots do not
        verify it and to set the option for a private or test root.
        """
        text = self.connect()
        self.assertIn("option 'acme_ca_file'", text)
        self.assertIn("https://acme.test/directory", text)
        self.assertIn("system's trusted roots (certificate verify failed)", text)
        self.assertIn("set acme_ca_file to the PEM file", text)

    def test_wrongCAFile(self) -> None:
        """
        With C{acme_ca_file}, the error names the file that did not verify
        it.
        """
        text = self.connect(acmeCAFile="/etc/test-ca.pem")
        self.assertIn("option 'acme_ca_file'", text)
        self.assertIn("https://acme.test/directory", text)
        self.assertIn("against acme_ca_file /etc/test-ca.pem", text)


class UntrustedLaterTests(ResourceTestCase):
    """
    An ACME server whose certificate stops verifying once the account is
    connected (the test CA restarted with a new listener root).
    """

    def test_renewalNamesOption(self) -> None:
        """
        A later request's failure (20017) names the option
        C{acme_ca_file}, the file trusted and the URL of the request.
        """
        resource = self.start(acmeCAFile="/etc/test-ca.pem")
        self.patch(resource._connection._client._transport, "_http", UntrustedAgent())
        only = [resource.managed[frozenset(REPORTS)]]
        runUntilFired(self.reactor, resource.check(force=True, only=only))
        [text] = self.eventTexts(20017)
        self.assertIn("https://acme.test/", text)
        self.assertIn("does not verify against acme_ca_file /etc/test-ca.pem", text)
        self.assertIn("set acme_ca_file to the PEM file", text)
