"""
Tests for L{letsencrypt_resource.acmeclient} and
L{letsencrypt_resource.issuer} against the in-memory fake ACME server.
"""

from __future__ import annotations

from acme import messages
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import Site

from letsencrypt_resource.acmeclient import (
    MAX_BAD_NONCE_RETRIES,
    ACMEClient,
    ACMEProblem,
    ACMEProtocolError,
    ACMEServerUntrusted,
    parseRetryAfter,
)
from letsencrypt_resource.challenge import ChallengeResponder
from letsencrypt_resource.httpclient import makeHTTPClient
from letsencrypt_resource.issuer import (
    ORDER_TIMEOUT,
    CertificateMismatch,
    OrderTimedOut,
    obtainCertificate,
)
from letsencrypt_resource.keys import generateKey, jwkFor, keyToPEM
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.testing import (
    FakeACMEServer,
    registeredClient,
    runUntilFired,
)
from tests.helpers import selfSigned

DOMAINS = ("files.example.test", "www.example.test")


class RetryAfterTests(SynchronousTestCase):
    """
    Tests for L{parseRetryAfter}.
    """

    def test_seconds(self) -> None:
        """
        Delay-seconds are taken as they are.
        """
        self.assertEqual(parseRetryAfter("120", 0), 120.0)

    def test_date(self) -> None:
        """
        An HTTP date becomes the seconds from now until then, never negative.
        """
        self.assertEqual(parseRetryAfter("Thu, 01 Jan 1970 00:01:40 GMT", 40), 60.0)
        self.assertEqual(parseRetryAfter("Thu, 01 Jan 1970 00:01:40 GMT", 400), 0.0)

    def test_absentOrGarbage(self) -> None:
        """
        No header, or one that is neither form, means no delay was asked.
        """
        self.assertIsNone(parseRetryAfter(None, 0))
        self.assertIsNone(parseRetryAfter("soon", 0))


class ACMEClientTests(SynchronousTestCase):
    """
    Tests for L{ACMEClient}'s requests and error handling.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = FakeACMEServer(self.clock)

    def newOrder(self, client: object) -> object:
        return runUntilFired(
            self.clock,
            client.newOrder(  # type: ignore[attr-defined]
                messages.NewOrder(
                    identifiers=[
                        messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
                        for name in DOMAINS
                    ]
                )
            ),
        )

    def test_register(self) -> None:
        """
        Registering creates one account and keeps its URL as the C{kid};
        registering the same key again finds the same account.
        """
        client = registeredClient(self.clock, self.server)
        self.assertTrue(client.accountURL.startswith("https://acme.test/account/"))
        first = client.accountURL
        runUntilFired(
            self.clock,
            client.register(messages.NewRegistration.from_data(terms_of_service_agreed=True)),
        )
        self.assertEqual(client.accountURL, first)
        self.assertEqual(self.server.accountsCreated, 1)

    def test_badNonceRetried(self) -> None:
        """
        A C{badNonce} rejection is retried with the fresh nonce it carried,
        as many times in a row as the bound allows.
        """
        client = registeredClient(self.clock, self.server)
        problem = messages.Error.with_code("badNonce", detail="try again")
        self.server.fail("/new-order", 400, problem=problem, times=MAX_BAD_NONCE_RETRIES)
        url, order = self.newOrder(client)
        self.assertEqual(order.status, messages.STATUS_PENDING)
        orders = [r for r in self.server.requests if r[1] == "/new-order"]
        self.assertEqual(len(orders), MAX_BAD_NONCE_RETRIES + 1)
        # Every retry used the nonce its rejection carried.
        self.assertNotIn(("HEAD", "/new-nonce"), self.server.requests)

    def test_badNonceBounded(self) -> None:
        """
        Past the bound, the C{badNonce} problem is raised.
        """
        client = registeredClient(self.clock, self.server)
        problem = messages.Error.with_code("badNonce", detail="never")
        self.server.fail("/new-order", 400, problem=problem, times=None)
        error = self.assertRaises(ACMEProblem, self.newOrder, client)
        self.assertEqual(error.code, "badNonce")
        orders = [r for r in self.server.requests if r[1] == "/new-order"]
        self.assertEqual(len(orders), MAX_BAD_NONCE_RETRIES + 1)

    def test_problemFields(self) -> None:
        """
        A problem document becomes an L{ACMEProblem} with its type, detail,
        status, Retry-After and the identifiers of its subproblems.
        """
        client = registeredClient(self.clock, self.server)
        sub = messages.Error.with_code(
            "rejectedIdentifier",
            detail="not allowed",
            identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="www.example.test"),
        )
        problem = messages.Error.with_code("rateLimited", detail="too many", subproblems=(sub,))
        self.server.fail("/new-order", 429, problem=problem, headers={"Retry-After": "3600"})
        error = self.assertRaises(ACMEProblem, self.newOrder, client)
        self.assertEqual(error.type, "urn:ietf:params:acme:error:rateLimited")
        self.assertEqual(error.status, 429)
        self.assertEqual(error.retryAfter, 3600.0)
        self.assertEqual(error.identifiers, ("www.example.test",))
        self.assertIn("too many", str(error))
        self.assertIn("www.example.test", str(error))

    def test_serverErrorWithoutProblem(self) -> None:
        """
        A 5xx without a problem document is an L{ACMEProtocolError} naming
        the URL and status, with the body's start.
        """
        client = registeredClient(self.clock, self.server)
        self.server.fail("/new-order", 503, body=b"<html>down</html>")
        error = self.assertRaises(ACMEProtocolError, self.newOrder, client)
        self.assertEqual(error.status, 503)
        self.assertIn("new-order", str(error))
        self.assertIn("down", str(error))

    def test_malformedJSON(self) -> None:
        """
        A success whose body is not JSON is an L{ACMEProtocolError}.
        """
        client = registeredClient(self.clock, self.server)
        self.server.fail("/new-order", 201, body=b'{"status": "pend')
        error = self.assertRaises(ACMEProtocolError, self.newOrder, client)
        self.assertIn("not JSON", str(error))

    def test_nonASCIIURL(self) -> None:
        """
        A URL that is not plain ASCII, as a damaged directory or order could
        give, is an L{ACMEProtocolError} naming it; nothing is sent.
        """
        client = registeredClient(self.clock, self.server)
        url = "https://acme.test/order/caf\u00e9"
        error = self.assertRaises(
            ACMEProtocolError, runUntilFired, self.clock, client.fetch(url, messages.Order)
        )
        self.assertIn(url, str(error))
        self.assertIn("not plain ASCII", str(error))

    def test_directoryUnreachable(self) -> None:
        """
        A directory that answers an error fails the connection.
        """
        self.server.fail("/directory", 500, body=b"oops")
        self.assertRaises(ACMEProtocolError, registeredClient, self.clock, self.server)


class HangingAgent:
    """
    An agent whose requests never get an answer; cancelling one fails it
    as Twisted's HTTP client does, with L{ResponseNeverReceived}.
    """

    def request(self, method: bytes, uri: bytes, headers: object, body: object) -> Deferred:
        def cancel(deferred: Deferred) -> None:
            deferred.errback(ResponseNeverReceived([Failure(CancelledError())]))

        return Deferred(cancel)


class CancelTests(SynchronousTestCase):
    """
    Cancelling a request is a cancellation, not a failed request.
    """

    def test_cancelledRequest(self) -> None:
        """
        A request cancelled by its caller (a stop) fails with
        L{CancelledError}, not an L{ACMEProtocolError} that an attempt
        would count as a failure of the CA.
        """
        clock = Clock()
        jwk, algorithm = jwkFor(generateKey("ecdsa-p256"))
        client = ACMEClient(HangingAgent(), clock, messages.Directory({}), jwk, algorithm)
        sending = client._transport.send("GET", "https://acme.test/directory")
        sending.cancel()
        self.failureResultOf(sending, CancelledError)

    def test_noAnswerInTime(self) -> None:
        """
        A request with no answer within the time limit is cancelled and
        fails with an L{ACMEProtocolError} saying so; no timer is left.
        """
        clock = Clock()
        jwk, algorithm = jwkFor(generateKey("ecdsa-p256"))
        client = ACMEClient(
            HangingAgent(), clock, messages.Directory({}), jwk, algorithm, timeout=30
        )
        sending = client._transport.send("GET", "https://acme.test/directory")
        clock.advance(29)
        self.assertNoResult(sending)
        clock.advance(1)
        error = self.failureResultOf(sending, ACMEProtocolError).value
        self.assertIn("no answer from the ACME server within 30 seconds", str(error))
        self.assertEqual(clock.getDelayedCalls(), [])


class ObtainCertificateTests(SynchronousTestCase):
    """
    Tests for L{obtainCertificate}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = FakeACMEServer(self.clock)
        self.responder = ChallengeResponder()
        self.server.validate = self.responder.lookup
        self.client = registeredClient(self.clock, self.server)
        self.key = generateKey("ecdsa-p256")

    def obtain(self) -> object:
        return runUntilFired(
            self.clock,
            obtainCertificate(self.client, self.responder, self.clock, DOMAINS, self.key),
        )

    def test_issued(self) -> None:
        """
        The certificate is for our key and names, with the CA's chain, and
        no challenge stays pending afterwards.
        """
        certifiedKey = self.obtain()
        self.assertEqual(certifiedKey.domains, DOMAINS)
        self.assertEqual(certifiedKey.chain, (self.server.caCertificate,))
        self.assertEqual(len(self.responder), 0)

    def test_validationFails(self) -> None:
        """
        When a name cannot be validated, the CA's problem is raised with the
        name that failed, and the tokens are withdrawn.
        """
        self.server.refuse.add("www.example.test")
        error = self.assertRaises(ACMEProblem, self.obtain)
        self.assertEqual(error.code, "unauthorized")
        self.assertIn("www.example.test", error.identifiers)
        self.assertEqual(len(self.responder), 0)

    def test_failedNameReportedWhileOthersPending(self) -> None:
        """
        When one name fails while another's authorization is still pending,
        the problem is the failed one's, with its name and the challenge's
        error, not the pending one's lack of a problem.
        """
        self.server.fail("/chall/", 200, body=b"{}", times=1)
        self.server.refuse.add("www.example.test")
        error = self.assertRaises(ACMEProblem, self.obtain)
        self.assertEqual(error.code, "unauthorized")
        self.assertEqual(error.identifiers, ("www.example.test",))
        self.assertIn("(www.example.test): no key authorization served", str(error))
        self.assertNotIn("pending", str(error))

    def test_everyFailedNameReported(self) -> None:
        """
        When several names fail, the problem is a compound one that names
        each of them with its own problem.
        """
        self.server.refuse.update(DOMAINS)
        error = self.assertRaises(ACMEProblem, self.obtain)
        self.assertEqual(error.code, "compound")
        self.assertEqual(error.identifiers, DOMAINS)
        for name in DOMAINS:
            self.assertIn(f"unauthorized ({name}): no key authorization", str(error))

    def test_retryAfterHonoured(self) -> None:
        """
        While the order is pending, polls wait as long as Retry-After says:
        after a quick first poll, one every 10 seconds.
        """
        self.server.validationDelay = 25
        self.server.orderRetryAfter = 10
        self.obtain()
        polls = [r for r in self.server.requests if r[1].startswith("/order/")]
        self.assertEqual(len(polls), 4)
        self.assertAlmostEqual(self.clock.seconds(), 30.02)

    def test_backoffWithoutRetryAfter(self) -> None:
        """
        Without Retry-After, polls start fast and back off: a validation that
        takes a minute costs a few dozen polls at most.
        """
        self.server.validationDelay = 60
        self.obtain()
        polls = [r for r in self.server.requests if r[1].startswith("/order/")]
        self.assertGreater(len(polls), 5)
        self.assertLess(len(polls), 40)

    def test_timeout(self) -> None:
        """
        An order that stays pending fails after L{ORDER_TIMEOUT} seconds with
        L{OrderTimedOut}, and polls back off instead of hammering the CA.
        """
        self.server.fail("/chall/", 200, body=b"{}", times=None)
        start = self.clock.seconds()
        error = self.assertRaises(OrderTimedOut, self.obtain)
        self.assertLessEqual(self.clock.seconds() - start, ORDER_TIMEOUT)
        self.assertEqual(error.status, "pending")
        polls = [r for r in self.server.requests if r[1].startswith("/order/")]
        self.assertLess(len(polls), 100)

    def test_wrongCertificateRefused(self) -> None:
        """
        A certificate for another key is refused.
        """
        other = generateKey("ecdsa-p256")
        self.server.issue = (  # type: ignore[method-assign]
            lambda publicKey, names, validity=None, issue=self.server.issue: issue(
                other.public_key(), names, validity
            )
        )
        self.assertRaises(CertificateMismatch, self.obtain)


class UnreachableTests(TestCase):
    """
    An ACME server that cannot be reached, over a real loopback socket.
    """

    async def test_connectionRefused(self) -> None:
        """
        A refused connection is an L{ACMEProtocolError} that says the server
        cannot be reached and names the URL.
        """
        port = freeTCPPort()
        http, pool = makeHTTPClient(reactor, None)
        self.addCleanup(pool.closeCachedConnections)
        jwk, algorithm = jwkFor(generateKey("ecdsa-p256"))
        url = f"http://127.0.0.1:{port}/directory"
        with self.assertRaises(ACMEProtocolError) as raised:
            await ACMEClient.connect(http, reactor, url, jwk, algorithm)
        self.assertIn("cannot reach the ACME server", str(raised.exception))
        self.assertIn(url, str(raised.exception))

    async def connectOverTLS(self, names: tuple[str, ...], trusted: bool) -> ACMEServerUntrusted:
        """
        Connect to a loopback HTTPS server whose certificate, self-signed
        for C{names}, is C{trusted} or not.

        @return: the error the connection failed with.
        """
        served = selfSigned(names)
        pem = served.certificate.public_bytes(Encoding.PEM)
        tlsServer = PrivateCertificate.loadPEM(keyToPEM(served.key) + pem)
        port = reactor.listenSSL(  # type: ignore[attr-defined]
            0, Site(Resource()), tlsServer.options(), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        http, pool = makeHTTPClient(reactor, [Certificate.loadPEM(pem)] if trusted else None)
        self.addCleanup(pool.closeCachedConnections)
        jwk, algorithm = jwkFor(generateKey("ecdsa-p256"))
        url = f"https://localhost:{port.getHost().port}/dir"
        with self.assertRaises(ACMEServerUntrusted) as raised:
            await ACMEClient.connect(http, reactor, url, jwk, algorithm)
        self.assertEqual(raised.exception.url, url)
        self.assertIn(url, str(raised.exception))
        return raised.exception

    async def test_untrustedCertificate(self) -> None:
        """
        A server certificate that does not verify against the trusted roots
        is an L{ACMEServerUntrusted} (an L{ACMEProtocolError}) naming the
        URL and saying so.
        """
        error = await self.connectOverTLS(("localhost",), trusted=False)
        self.assertIsInstance(error, ACMEProtocolError)
        self.assertEqual(error.reason, "certificate verify failed")
        self.assertIn("set acme_ca_file to the PEM file", str(error))

    def test_untrustedMessageNamesCAFile(self) -> None:
        """
        The message of an L{ACMEServerUntrusted} names the URL once, the
        option C{acme_ca_file} and the file trusted, if any.
        """
        url = "https://ca.example.test/new-order"
        withFile = str(ACMEServerUntrusted(url, "certificate verify failed", "/etc/ca.pem"))
        self.assertEqual(withFile.count(url), 1)
        self.assertIn("against acme_ca_file /etc/ca.pem (certificate verify failed)", withFile)
        system = str(ACMEServerUntrusted(url, "certificate verify failed"))
        self.assertIn("system's trusted roots (certificate verify failed)", system)
        self.assertIn("set acme_ca_file", system)

    async def test_certificateForAnotherHost(self) -> None:
        """
        A trusted certificate for another name is one too.
        """
        error = await self.connectOverTLS(("other.example.test",), trusted=True)
        self.assertIn("not for this host", error.reason)
