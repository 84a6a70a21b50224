"""
The TLS-ALPN-01 challenge (RFC 8737) as the C{acme} library reads it,
apart from L{letsencrypt_resource.alpn} so that a TLS service answers
validation handshakes without importing C{acme}.
"""

from __future__ import annotations

from typing import Any

from acme import challenges


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """
    The answer to a C{tls-alpn-01} challenge: an empty object, as for
    C{http-01}.
    """

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """
    The C{tls-alpn-01} challenge, which the C{acme} library no longer
    defines.
    """

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: Any, **unused: Any) -> str:
        """
        The key authorization, whose digest the validation certificate
        carries.
        """
        return self.key_authorization(account_key)
