"""
An order the CA created that has not ended yet, as the renewal state keeps
it: a module of its own, so that reading the state does not import the
ACME client.
"""

from __future__ import annotations

from typing import Any

import attrs

from .keys import PrivateKey, keyFromPEM, keyToPEM


@attrs.frozen
class PendingOrder:
    """
    An order the CA created that has not ended yet, kept in the renewal
    state so that an attempt cut short (a restart, a network failure) can
    resume it instead of placing another.

    @ivar url: The order's URL at the CA.
    @ivar key: The private key its certificate is for.
    """

    url: str
    key: PrivateKey

    def toJSON(self) -> dict[str, str]:
        """
        The order as JSON-ready data; it holds the private key, so it is
        stored as keys are (see L{letsencrypt_resource.storage.directory}).
        """
        return {"url": self.url, "key": keyToPEM(self.key).decode("ascii")}

    @classmethod
    def fromJSON(cls, document: Any) -> PendingOrder:
        """
        Read what L{toJSON} wrote.

        @raise ValueError: when C{document} is not such data.
        """
        try:
            url, pem = document["url"], document["key"]
            if not isinstance(url, str) or not isinstance(pem, str):
                raise ValueError("the URL and key must be strings")
            return cls(url, keyFromPEM(pem.encode("ascii")))
        except (KeyError, TypeError, UnicodeEncodeError) as error:
            raise ValueError(f"not a pending order: {error!r}") from None
