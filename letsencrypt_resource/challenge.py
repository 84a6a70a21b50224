"""
The HTTP-01 challenge site.

It answers C{GET /.well-known/acme-challenge/<token>} with the key
authorization while that challenge is pending, C{test.txt} with a fixed
readiness text, and anything else with 404 or, when a redirect URL is
configured, a redirect there.  It never reads the file system itself: a
well-formed token not pending here is looked up in the resource's
storage, where another node's order may have published it, a few lookups
at a time, each for a short time at most and only while its client waits.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .alpn import serverName
from .httplimits import ALLOWED_METHODS, LimitedSite, notFound, plainText, refuseMethod
from .storage.interface import StorageError
from .storage.records import challengeKey

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
READY_TEXT = b"Let's Encrypt Ready"

#: How many lookups of tokens in the storage run at once, at most; a
#: request beyond is answered 404 at once.
SHARED_LOOKUPS = 8
#: How long a lookup of a token in the storage may take: then it is given
#: up, its slot freed, and the request answered 404.
LOOKUP_TIMEOUT = 2.0


def _isToken(path: bytes) -> bool:
    """
    Whether C{path} is a challenge token, by the one rule the storage
    keeps them by (see L{challengeKey}).
    """
    try:
        challengeKey(path.decode("ascii"))
    except (UnicodeDecodeError, StorageError):
        return False
    return True


class ChallengeResponder:
    """
    The challenges currently pending: HTTP-01 ones by token, TLS-ALPN-01
    ones by the SNI name of their validation handshakes.
    """

    def __init__(self, shared: Callable[[str], Deferred[str | None]] | None = None) -> None:
        """
        @param shared: Looks a token up among the challenges every node
            published (see
            L{letsencrypt_resource.storage.records.Records.loadChallenge}).
        """
        self._pending: dict[str, str] = {}
        # TLS-ALPN-01: SNI name to identifier and key authorization, and
        # token to SNI name.
        self._alpn: dict[str, tuple[str, str]] = {}
        self._alpnTokens: dict[str, str] = {}
        self._shared = shared
        self._looking = 0
        #: Called with how each challenge request was answered:
        #: C{"answered"} or C{"not_found"}.
        self.counted: Callable[[str], object] = lambda result: None

    def add(self, token: str, keyAuthorization: str) -> None:
        """
        Answer C{token} with C{keyAuthorization} from now on.
        """
        self._pending[token] = keyAuthorization

    def addALPN(self, token: str, identifier: str, keyAuthorization: str) -> None:
        """
        Answer the TLS-ALPN-01 challenge C{token} for C{identifier} (a
        domain name or IP address) with C{keyAuthorization} from now on.
        """
        name = serverName(identifier)
        self._alpn[name] = (identifier, keyAuthorization)
        self._alpnTokens[token] = name

    def remove(self, token: str) -> None:
        """
        Stop answering C{token}, of either type.
        """
        self._pending.pop(token, None)
        name = self._alpnTokens.pop(token, None)
        if name is not None:
            self._alpn.pop(name, None)

    def lookupALPN(self, name: str) -> tuple[str, str] | None:
        """
        The identifier and key authorization of the TLS-ALPN-01 challenge
        whose validation handshake gives the SNI name C{name}, if pending.
        """
        return self._alpn.get(name)

    def lookup(self, token: str) -> str | None:
        """
        The key authorization for C{token}, if it is pending.
        """
        return self._pending.get(token)

    def lookupShared(self, token: str, clock: IReactorTime) -> Deferred[str | None] | None:
        """
        Look C{token} up among the challenges every node published, for
        L{LOOKUP_TIMEOUT} seconds of C{clock} at most; cancelling it (the
        client left) ends it at once and frees its slot.

        @return: A Deferred of its key authorization or C{None}, which
            never fails; or C{None} at once when there is nowhere to look
            or L{SHARED_LOOKUPS} lookups run already.
        """
        if self._shared is None or self._looking >= SHARED_LOOKUPS:
            return None
        self._looking += 1

        def ended(result: str | None | Failure) -> str | None:
            self._looking -= 1
            return result if isinstance(result, str) else None

        looking = self._shared(token)
        looking.addTimeout(LOOKUP_TIMEOUT, clock)
        return looking.addBoth(ended)

    def __len__(self) -> int:
        return len(self._pending) + len(self._alpn)


class _ReadOnlyResource(Resource):
    """
    A resource that answers GET and HEAD alike, and every other method
    with 405.
    """

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)  # type: ignore[attr-defined]

    def render(self, request: Request) -> bytes:
        """
        Answer GET and HEAD; refuse every other method with 405.
        """
        if request.method in ALLOWED_METHODS:
            return super().render(request)
        return refuseMethod(request)


class ChallengeTokens(_ReadOnlyResource):
    """
    The resource of C{/.well-known/acme-challenge/}: a host that serves
    port 80 itself mounts it there in its own site (see
    L{letsencrypt_resource.resource.LetsEncryptResource.challengeResource}).
    It answers C{<token>} with the key authorization while that challenge
    is pending, C{test.txt} with a fixed readiness text, and anything else
    with 404.
    """

    isLeaf = True

    def __init__(self, responder: ChallengeResponder):
        super().__init__()
        self._responder = responder

    def render_GET(self, request: Request) -> bytes:
        return self.answer(request, b"/".join(request.postpath or []))

    def answer(self, request: Request, token: bytes) -> bytes:
        """
        Answer C{request} for the path C{token} below the challenge folder.

        @return: The body.
        """
        if token == b"test.txt":
            return plainText(request, READY_TEXT)
        if _isToken(token):
            answer = self._responder.lookup(token.decode("ascii"))
            if answer is not None:
                self._responder.counted("answered")
                return plainText(request, answer.encode("ascii"))
            site = request.site
            assert site is not None, "a request being rendered has its site"
            shared = self._responder.lookupShared(token.decode("ascii"), site.reactor)
            if shared is not None:
                gone: list[Failure] = []

                def leave(failure: Failure) -> None:
                    gone.append(failure)
                    shared.cancel()

                request.notifyFinish().addErrback(leave)
                shared.addCallback(
                    lambda found: None if gone else self._answerLater(request, found)
                )
                return NOT_DONE_YET  # type: ignore[return-value]
        self._responder.counted("not_found")
        return notFound(request)

    def _answerLater(self, request: Request, answer: str | None) -> None:
        """
        Answer C{request}, whose client has not gone, with C{answer}, or 404
        when it is C{None}, not ASCII, or not a key authorization (a
        TLS-ALPN-01 record, see L{letsencrypt_resource.alpn.sharedRecord}).
        """
        try:
            if not answer or " " in answer:
                body = None
            else:
                body = plainText(request, answer.encode("ascii"))
        except UnicodeEncodeError:
            body = None
        self._responder.counted("not_found" if body is None else "answered")
        body = notFound(request) if body is None else body
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()


class ChallengeResource(_ReadOnlyResource):
    """
    The root of the challenge site.
    """

    isLeaf = True

    def __init__(self, responder: ChallengeResponder, redirectURL: str | None = None):
        super().__init__()
        self._tokens = ChallengeTokens(responder)
        self._redirectURL = redirectURL.rstrip("/").encode("utf-8") if redirectURL else None

    def render_GET(self, request: Request) -> bytes:
        path = request.path
        if path.startswith(CHALLENGE_PREFIX):
            return self._tokens.answer(request, path[len(CHALLENGE_PREFIX) :])
        if self._redirectURL is not None and path.startswith(b"/"):
            # Only a path may follow the redirect URL: appending another
            # request-target form ("@evil.example", "http://...") would
            # change the host the client is sent to.
            request.setResponseCode(301)
            request.setHeader(b"location", self._redirectURL + request.uri)
            return b""
        return notFound(request)


class ChallengeSite(LimitedSite):
    """
    The challenge site, with its access log off: the CA's validators fetch
    each token several times and the events already tell the story.
    """

    def __init__(self, responder: ChallengeResponder, redirectURL: str | None = None):
        super().__init__(ChallengeResource(responder, redirectURL))
