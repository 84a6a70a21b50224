"""
The resource's own challenge site, as a service: it listens where the
options say while the resource runs, and answers the HTTP-01 challenges of
the orders under way (the site itself is L{letsencrypt_resource.challenge}).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.resource import IResource

from . import events
from .challenge import ChallengeResponder, ChallengeSite, ChallengeTokens
from .config import ResourceOptions
from .listenerservice import ListenerService


class ChallengeSiteService(ListenerService):
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
        place = options if options.challengeSite else None
        super().__init__(
            place, reactor, log, events.CHALLENGE_SITE_LISTENING, events.CHALLENGE_SITE_FAILED
        )
        self._options = options
        self._responder = responder

    def challengeResource(self) -> IResource:
        """
        The resource that answers the HTTP-01 challenges, for a host that
        mounts it in a site of its own.
        """
        return ChallengeTokens(self._responder)

    def factory(self) -> ChallengeSite:
        return ChallengeSite(self._responder, self._options.redirectURL)
