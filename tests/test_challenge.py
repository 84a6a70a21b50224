"""
Tests for L{letsencrypt_resource.challenge}, over raw HTTP in memory.
"""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.alpn import sharedKey, sharedRecord
from letsencrypt_resource.challenge import (
    CHALLENGE_PREFIX,
    LOOKUP_TIMEOUT,
    READY_TEXT,
    SHARED_LOOKUPS,
    ChallengeResponder,
    ChallengeSite,
)
from letsencrypt_resource.testing import MemoryStore
from tests.helpers import (
    HTTPResponse,
    InMemoryConnection,
    connectInMemory,
    exchange,
    rawRequest,
)

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
OTHER_TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
OTHER_KEY_AUTHORIZATION = OTHER_TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
NOT_FOUND_TEXT = b"Not found."
REDIRECT_URL = "https://www.example.com/"


def challengePath(token: str) -> bytes:
    """
    The request path of the challenge for C{token}.
    """
    return CHALLENGE_PREFIX + token.encode("ascii")


def makeSite(
    redirectURL: str | None = None,
) -> tuple[ChallengeSite, ChallengeResponder]:
    """
    A challenge site with L{TOKEN} pending, its connection timeouts on a
    fake clock.
    """
    responder = ChallengeResponder()
    responder.add(TOKEN, KEY_AUTHORIZATION)
    site = ChallengeSite(responder, redirectURL)
    site.reactor = MemoryReactorClock()
    return site, responder


def fetch(site: ChallengeSite, target: bytes, method: bytes = b"GET") -> HTTPResponse:
    """
    Send C{method} C{target} to C{site} and read the response.
    """
    return exchange(site, rawRequest(method, target))


class ChallengeResponderTests(SynchronousTestCase):
    """
    Tests for L{ChallengeResponder}.
    """

    def test_addLookupRemove(self) -> None:
        """
        A token is found from L{ChallengeResponder.add} until
        L{ChallengeResponder.remove}, which also accepts unknown tokens.
        """
        responder = ChallengeResponder()
        responder.add(TOKEN, KEY_AUTHORIZATION)
        self.assertEqual((responder.lookup(TOKEN), len(responder)), (KEY_AUTHORIZATION, 1))
        responder.remove(TOKEN)
        responder.remove(OTHER_TOKEN)
        self.assertEqual((responder.lookup(TOKEN), len(responder)), (None, 0))


class ChallengeSiteTests(SynchronousTestCase):
    """
    Tests for L{ChallengeSite} without a redirect URL.
    """

    def setUp(self) -> None:
        self.site, self.responder = makeSite()

    def assertNotFound(self, target: bytes) -> None:
        """
        Assert that C{target} gets the plain-text 404.
        """
        response = fetch(self.site, target)
        self.assertEqual((response.code, response.body), (404, NOT_FOUND_TEXT), target)

    def test_pendingToken(self) -> None:
        """
        A pending token is answered with its key authorization, 200, plain
        text, not to be cached.
        """
        response = fetch(self.site, challengePath(TOKEN))
        self.assertEqual(
            (response.code, response.body, response.headers[b"cache-control"]),
            (200, KEY_AUTHORIZATION.encode("ascii"), b"no-store"),
        )
        self.assertTrue(response.headers[b"content-type"].startswith(b"text/plain"))

    def test_eachTokenItsOwnAnswer(self) -> None:
        """
        With several tokens pending each gets its own key authorization.
        """
        self.responder.add(OTHER_TOKEN, OTHER_KEY_AUTHORIZATION)
        self.assertEqual(
            [fetch(self.site, challengePath(t)).body for t in (TOKEN, OTHER_TOKEN)],
            [b.encode("ascii") for b in (KEY_AUTHORIZATION, OTHER_KEY_AUTHORIZATION)],
        )

    def test_unknownToken(self) -> None:
        """
        A token that was never added is not found.
        """
        self.assertNotFound(challengePath(OTHER_TOKEN))

    def test_removedToken(self) -> None:
        """
        A token is not found once removed.
        """
        self.responder.remove(TOKEN)
        self.assertNotFound(challengePath(TOKEN))

    def test_otherPaths(self) -> None:
        """
        Paths outside the challenge folder, the folder itself and a token
        with a trailing slash or extra segment are not found.
        """
        for target in [
            b"/",
            b"/index.html",
            b"/.well-known/",
            CHALLENGE_PREFIX.rstrip(b"/"),
            CHALLENGE_PREFIX,
            challengePath(TOKEN) + b"/",
            challengePath(TOKEN) + b"/x",
            challengePath(TOKEN)[1:],
        ]:
            self.assertNotFound(target)

    def test_pathTraversal(self) -> None:
        """
        Dot segments, plain or percent-encoded, reach nothing, not even a
        pending token.
        """
        for target in [
            CHALLENGE_PREFIX + b"../x",
            CHALLENGE_PREFIX + b"../../etc/passwd",
            CHALLENGE_PREFIX + b"%2e%2e/x",
            CHALLENGE_PREFIX + b"%2E%2E%2Fx",
            CHALLENGE_PREFIX + b"..%2f" + TOKEN.encode("ascii"),
            b"/.well-known/x/../acme-challenge/" + TOKEN.encode("ascii"),
            CHALLENGE_PREFIX + b"./" + TOKEN.encode("ascii"),
        ]:
            self.assertNotFound(target)

    def test_veryLongToken(self) -> None:
        """
        Tokens longer than any CA issues are not found, and not looked up.
        """
        longToken = "A" * 257
        self.responder.add(longToken, longToken + ".x")
        self.assertNotFound(challengePath(longToken))
        self.assertNotFound(challengePath("A" * 8000))

    def test_notBase64URL(self) -> None:
        """
        A token with characters outside base64url is not found, even when
        it differs from a pending token only by them.
        """
        for suffix in [b".", b"=", b"+", b"%20", b"%00", b"~", b";x", b"#x"]:
            self.assertNotFound(challengePath(TOKEN) + suffix)

    def test_queryIgnored(self) -> None:
        """
        A query string does not change the answer for a token.
        """
        response = fetch(self.site, challengePath(TOKEN) + b"?x=1")
        self.assertEqual(response.body, KEY_AUTHORIZATION.encode("ascii"))

    def test_readyText(self) -> None:
        """
        C{test.txt} in the challenge folder answers the readiness text.
        """
        response = fetch(self.site, challengePath("test.txt"))
        self.assertEqual((response.code, response.body), (200, READY_TEXT))
        self.assertEqual(READY_TEXT, b"Let's Encrypt Ready")

    def test_head(self) -> None:
        """
        HEAD gets the status and headers of GET and no body.
        """
        response = fetch(self.site, challengePath(TOKEN), b"HEAD")
        self.assertEqual(
            (response.code, response.body, response.headers[b"content-length"]),
            (200, b"", str(len(KEY_AUTHORIZATION)).encode("ascii")),
        )
        self.assertEqual(fetch(self.site, b"/nothing", b"HEAD").code, 404)

    def test_postRefused(self) -> None:
        """
        POST gets 405, on challenge paths and elsewhere, and never a 5xx.
        """
        for target in [challengePath(TOKEN), challengePath("test.txt"), b"/other"]:
            response = exchange(self.site, rawRequest(b"POST", target, b"x=1"))
            allowed = set(response.headers[b"allow"].split(b", "))
            self.assertEqual((response.code, allowed), (405, {b"GET", b"HEAD"}), target)

    def test_otherMethodsRefused(self) -> None:
        """
        Every other method (PUT, DELETE, OPTIONS, made-up ones) is refused
        with 405, never a 5xx, and never reaches a key authorization.
        """
        for method in [b"PUT", b"DELETE", b"OPTIONS", b"BREW"]:
            request = rawRequest(method, challengePath(TOKEN), b"x")
            response = exchange(self.site, request)
            self.assertEqual(response.code, 405, method)
            self.assertNotIn(KEY_AUTHORIZATION.encode("ascii"), response.body)


class RedirectTests(SynchronousTestCase):
    """
    Tests for L{ChallengeSite} with a redirect URL.
    """

    def setUp(self) -> None:
        self.site, self.responder = makeSite(REDIRECT_URL)

    def test_redirectsOtherPaths(self) -> None:
        """
        Paths outside the challenge folder get an empty 301 to the redirect
        URL followed by the request path.
        """
        for target in [b"/", b"/some/page.html", b"/.well-known/other"]:
            response = fetch(self.site, target)
            self.assertEqual(
                (response.code, response.headers[b"location"], response.body),
                (301, b"https://www.example.com" + target, b""),
            )

    def test_headRedirected(self) -> None:
        """
        HEAD is redirected like GET.
        """
        response = fetch(self.site, b"/page", b"HEAD")
        self.assertEqual(
            (response.code, response.headers[b"location"]),
            (301, b"https://www.example.com/page"),
        )

    def test_challengesStillAnswered(self) -> None:
        """
        Pending tokens and C{test.txt} are answered; unknown tokens are not
        found rather than redirected.
        """
        self.assertEqual(
            [
                (r.code, r.body)
                for r in (
                    fetch(self.site, challengePath(TOKEN)),
                    fetch(self.site, challengePath("test.txt")),
                    fetch(self.site, challengePath(OTHER_TOKEN)),
                )
            ],
            [
                (200, KEY_AUTHORIZATION.encode("ascii")),
                (200, READY_TEXT),
                (404, NOT_FOUND_TEXT),
            ],
        )

    def test_notAPathNotRedirected(self) -> None:
        """
        A request-target that is not a path is not appended to the redirect
        URL, where it would send the client to another host.
        """
        for target in [b"@evil.example/x", b"http://evil.example/x", b"evil"]:
            response = fetch(self.site, target)
            self.assertEqual((response.code, response.body), (404, NOT_FOUND_TEXT))

    def test_postRefused(self) -> None:
        """
        POST is refused with 405, not redirected.
        """
        self.assertEqual(fetch(self.site, b"/form", b"POST").code, 405)


#: Printable ASCII but space: what the HTTP parser lets through in a target.
_targetText = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300)
#: Tokens made of base64url and a few characters around it.
_tokenish = st.text(alphabet=st.sampled_from("ABCabc019_-./%+=~"), max_size=60)
_targets = st.one_of(
    _targetText.map(lambda text: "/" + text),
    _targetText.map(lambda text: CHALLENGE_PREFIX.decode("ascii") + text),
    _tokenish.map(lambda text: CHALLENGE_PREFIX.decode("ascii") + text),
    st.sampled_from([TOKEN, OTHER_TOKEN, "test.txt"]).map(
        lambda token: challengePath(token).decode("ascii")
    ),
    # The asterisk-form "*" is left out: Twisted answers it, not the site.
    _targetText.filter(lambda text: text not in ("", "*")),
).map(lambda text: text.encode("ascii"))


class PropertyTests(SynchronousTestCase):
    """
    Properties of L{ChallengeSite} over arbitrary request-targets.
    """

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(
        target=_targets,
        method=st.sampled_from([b"GET", b"HEAD"]),
        redirect=st.booleans(),
    )
    def test_onlyKnownAnswers(self, target: bytes, method: bytes, redirect: bool) -> None:
        """
        No request-target gets a 5xx; a body is only ever a pending key
        authorization, the readiness text or the not-found text; a redirect
        is empty and stays under the redirect URL.
        """
        site, _ = makeSite(REDIRECT_URL if redirect else None)
        response = fetch(site, target, method)
        self.assertLess(response.code, 500)
        if response.code == 301:
            self.assertTrue(redirect)
            self.assertEqual(response.body, b"")
            self.assertTrue(response.headers[b"location"].startswith(b"https://www.example.com/"))
            return
        expected = {
            200: {KEY_AUTHORIZATION.encode("ascii"), READY_TEXT},
            404: {NOT_FOUND_TEXT},
        }[response.code]
        if method == b"HEAD":
            self.assertEqual(response.body, b"")
        else:
            self.assertIn(response.body, expected)


class SharedChallengeTests(SynchronousTestCase):
    """
    A token not pending here is looked up among the challenges every node
    published in the storage, a few lookups at a time; a miss or a failure
    is a 404.
    """

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.looked: list[str] = []

        def shared(token: str) -> Deferred[str | None]:
            self.looked.append(token)
            return self.store.records.loadChallenge(token)

        self.responder = ChallengeResponder(shared)
        self.responder.add(TOKEN, KEY_AUTHORIZATION)
        self.site = ChallengeSite(self.responder)
        self.site.reactor = MemoryReactorClock()

    def test_publishedElsewhere(self) -> None:
        """
        A token another node published is answered with its key
        authorization; one pending here is answered without a lookup.
        """
        self.store.saveChallenge(OTHER_TOKEN, OTHER_KEY_AUTHORIZATION)
        response = fetch(self.site, challengePath(OTHER_TOKEN))
        self.assertEqual(
            (response.code, response.body), (200, OTHER_KEY_AUTHORIZATION.encode("ascii"))
        )
        self.assertEqual(fetch(self.site, challengePath(TOKEN)).code, 200)
        self.assertEqual(self.looked, [OTHER_TOKEN])

    def test_missing(self) -> None:
        """
        A token published nowhere is a 404.
        """
        response = fetch(self.site, challengePath(OTHER_TOKEN))
        self.assertEqual((response.code, response.body), (404, NOT_FOUND_TEXT))

    def test_storageFails(self) -> None:
        """
        A lookup that fails, or finds a value that is not ASCII, is a 404,
        never a server error.
        """
        self.store.values["challenges/" + OTHER_TOKEN] = "é".encode()
        self.assertEqual(fetch(self.site, challengePath(OTHER_TOKEN)).code, 404)
        self.store.values["challenges/" + OTHER_TOKEN] = b"\xff"
        self.assertEqual(fetch(self.site, challengePath(OTHER_TOKEN)).code, 404)
        self.store.close()
        self.assertEqual(fetch(self.site, challengePath(OTHER_TOKEN)).code, 404)

    def test_alpnRecordNotServed(self) -> None:
        """
        A TLS-ALPN-01 record another node published (its identifier and key
        authorization) is no HTTP-01 answer: a 404.
        """
        key = sharedKey("files.example.com")
        self.store.saveChallenge(key, sharedRecord("files.example.com", OTHER_KEY_AUTHORIZATION))
        self.assertEqual(fetch(self.site, challengePath(key)).code, 404)
        self.assertEqual(self.looked, [key])

    def test_malformedNotLookedUp(self) -> None:
        """
        A path that is no token (a dot, a slash, too long for the storage's
        rule) is a 404 with no lookup: nothing reaches the storage but
        well-formed tokens.
        """
        for token in ("../lock", "a.b", "a/b", "x" * 256, "%2e%2e"):
            self.assertEqual(fetch(self.site, challengePath(token)).code, 404)
        self.assertEqual(self.looked, [])

    def test_lookupsBounded(self) -> None:
        """
        At most L{SHARED_LOOKUPS} lookups run at once: beyond, none is
        started and the request is a 404 at once; one that ends makes room.
        """
        pending: list[Deferred[str | None]] = []

        def slow(token: str) -> Deferred[str | None]:
            pending.append(Deferred())
            return pending[-1]

        responder = ChallengeResponder(slow)
        lookups = [
            responder.lookupShared(OTHER_TOKEN, MemoryReactorClock()) for _ in range(SHARED_LOOKUPS)
        ]
        self.assertNotIn(None, lookups)
        self.assertIsNone(responder.lookupShared(OTHER_TOKEN, MemoryReactorClock()))
        self.assertEqual(len(pending), SHARED_LOOKUPS)
        pending[0].errback(RuntimeError("down"))
        self.assertIsNone(self.successResultOf(lookups[0]))
        self.assertIsNotNone(responder.lookupShared(OTHER_TOKEN, MemoryReactorClock()))

    def startLookups(self, site: ChallengeSite) -> list[InMemoryConnection]:
        """
        Ask C{site} for L{SHARED_LOOKUPS} tokens it must look up, and keep
        each connection open.
        """
        connections = []
        for i in range(SHARED_LOOKUPS):
            connection = connectInMemory(site)
            connection.send(rawRequest(b"GET", challengePath(f"junk{i}")))
            connection.pump.flush()
            connections.append(connection)
        return connections

    def test_leftLookupsFreed(self) -> None:
        """
        The slot of a lookup whose client left is freed at once: clients
        that ask for tokens on a hanging storage, then leave, do not keep
        the CA's request for a published token from being answered.
        """
        hung: list[Deferred[str | None]] = []

        def shared(token: str) -> Deferred[str | None]:
            if token == OTHER_TOKEN:
                return self.store.records.loadChallenge(token)
            hung.append(Deferred())
            return hung[-1]

        self.store.saveChallenge(OTHER_TOKEN, OTHER_KEY_AUTHORIZATION)
        site = ChallengeSite(ChallengeResponder(shared))
        site.reactor = MemoryReactorClock()
        for connection in self.startLookups(site):
            connection.collector.transport.loseConnection()
            connection.pump.flush()
        self.assertEqual(len(hung), SHARED_LOOKUPS)
        self.assertEqual(fetch(site, challengePath(OTHER_TOKEN)).code, 200)

    def test_lookupTimeLimited(self) -> None:
        """
        A lookup that takes longer than L{LOOKUP_TIMEOUT} is given up: its
        client gets a 404 and its slot is freed.
        """
        hung: list[Deferred[str | None]] = []

        def shared(token: str) -> Deferred[str | None]:
            if token == OTHER_TOKEN:
                return self.store.records.loadChallenge(token)
            hung.append(Deferred())
            return hung[-1]

        self.store.saveChallenge(OTHER_TOKEN, OTHER_KEY_AUTHORIZATION)
        site = ChallengeSite(ChallengeResponder(shared))
        site.reactor = clock = MemoryReactorClock()
        connections = self.startLookups(site)
        self.assertEqual(fetch(site, challengePath(OTHER_TOKEN)).code, 404)
        clock.advance(LOOKUP_TIMEOUT)
        for connection in connections:
            connection.pump.flush()
            self.assertIn(b" 404 ", connection.collector.received)
        self.assertEqual(fetch(site, challengePath(OTHER_TOKEN)).code, 200)

    def test_clientGone(self) -> None:
        """
        A client that leaves before the lookup ends gets nothing written to
        its closed connection, and no error is logged.
        """
        pending: list[Deferred[str | None]] = []

        def slow(token: str) -> Deferred[str | None]:
            pending.append(Deferred())
            return pending[-1]

        site = ChallengeSite(ChallengeResponder(slow))
        site.reactor = MemoryReactorClock()
        connection = connectInMemory(site)
        connection.send(rawRequest(b"GET", challengePath(OTHER_TOKEN)))
        connection.collector.transport.loseConnection()
        connection.pump.flush()
        pending[0].callback(OTHER_KEY_AUTHORIZATION)
        del pending[:]
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(connection.collector.received, b"")
