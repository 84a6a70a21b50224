"""
The HTTP-01 challenge site.

It answers C{GET /.well-known/acme-challenge/<token>} with the key
authorization while that challenge is pending, C{test.txt} with a fixed
readiness text, and anything else with 404 or, when a redirect URL is
configured, a redirect there.  It never reads the file system.
"""

from __future__ import annotations

import re

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request

from .httplimits import ALLOWED_METHODS, LimitedSite, notFound, plainText, refuseMethod

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
READY_TEXT = b"Let's Encrypt Ready"

_TOKEN = re.compile(rb"^[A-Za-z0-9_-]{1,256}$")


class ChallengeResponder:
    """
    The HTTP-01 challenges currently pending: token to key authorization.
    """

    def __init__(self) -> None:
        self._pending: dict[str, str] = {}

    def add(self, token: str, keyAuthorization: str) -> None:
        """
        Answer C{token} with C{keyAuthorization} from now on.
        """
        self._pending[token] = keyAuthorization

    def remove(self, token: str) -> None:
        """
        Stop answering C{token}.
        """
        self._pending.pop(token, None)

    def lookup(self, token: str) -> str | None:
        """
        The key authorization for C{token}, if it is pending.
        """
        return self._pending.get(token)

    def __len__(self) -> int:
        return len(self._pending)


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
        if _TOKEN.match(token):
            answer = self._responder.lookup(token.decode("ascii"))
            if answer is not None:
                return plainText(request, answer.encode("ascii"))
        return notFound(request)


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

    def log(self, request: http.Request) -> None:
        """
        Write no access log.
        """
