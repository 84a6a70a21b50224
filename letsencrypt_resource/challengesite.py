"""
The resource's own challenge site, as a service: it listens where the
options say while the resource runs, and answers the HTTP-01 challenges of
the orders under way (the site itself is L{letsencrypt_resource.challenge}).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from . import events, listening
from .challenge import ChallengeResponder, ChallengeSite, ChallengeTokens
from .config import ResourceOptions
from .listening import Listener


class ChallengeSiteService(Service):
    """
    Listens for the CA's HTTP-01 validation requests, unless the options
    say C{challenge_site = no}.
    """

    def __init__(
        self, options: ResourceOptions, responder: ChallengeResponder, reactor: Any, log: Logger
    ):
        """
        @param responder: The challenges pending.
        @param log: Where events go.
        """
        self._options = options
        self._responder = responder
        self._reactor = reactor
        self._log = log
        self._port: Listener | None = None

    def challengeResource(self) -> IResource:
        """
        The resource that answers the HTTP-01 challenges, for a host that
        mounts it in a site of its own.
        """
        return ChallengeTokens(self._responder)

    def startService(self) -> None:
        super().startService()
        if not self._options.challengeSite:
            return
        site = ChallengeSite(self._responder, self._options.redirectURL)
        self._port = Listener(self._reactor, listening.description(self._options), site)
        self._port.start().addCallbacks(self._listened, self._failed)

    def _listened(self, port: IListeningPort) -> None:
        address, number = listening.listeningPlace(self._options, port)
        events.CHALLENGE_SITE_LISTENING.emit(self._log, address=address, port=number)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        address, number = listening.place(self._options)
        events.CHALLENGE_SITE_FAILED.emit(
            self._log,
            address=address,
            port=number,
            details=listening.failureDetails(failure),
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return port.stopListening()
