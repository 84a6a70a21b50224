"""
The accounts of L{FakeACMEServer
<letsencrypt_resource.testing.acmeserver.FakeACMEServer>}: nonces, JWS
verification, registration, external account binding, updates and key
changes.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import josepy
from acme import jws, messages
from twisted.web.server import Request

from ..acmeclient import KeyChange
from .acmewire import BASE, ACMEProblem, answerJSON

if TYPE_CHECKING:
    from .acmeserver import FakeACMEServer


class AccountBook:
    """
    The fake server's accounts and nonces.

    @ivar keys: each account's URL, to its key.
    """

    def __init__(self, server: FakeACMEServer, ids: itertools.count[int]) -> None:
        self._server = server
        self._ids = ids
        self._nonces: set[str] = set()
        self.keys: dict[str, josepy.JWK] = {}
        self._registrations: dict[str, messages.Registration] = {}

    def forget(self) -> None:
        """
        Forget every account, as a CA whose database was reset.
        """
        self.keys.clear()

    def giveNonce(self, request: Request) -> None:
        """
        Give C{request}'s answer a new nonce.
        """
        nonce = josepy.encode_b64jose(next(self._ids).to_bytes(8, "big"))
        self._nonces.add(nonce)
        request.setHeader("replay-nonce", nonce)

    def verify(self, request: Request, path: str) -> tuple[bytes, str | None, josepy.JWK]:
        """
        Check the JWS that C{request} to C{path} carries.

        @return: its payload, the account URL (C{None} for a C{jwk} JWS) and
            the key that signed it.
        @raise ACMEProblem: when it is not a valid JWS for C{path}.
        """
        assert request.content is not None
        try:
            signed = jws.JWS.json_loads(request.content.read())
        except (ValueError, josepy.DeserializationError) as error:
            raise ACMEProblem(400, "malformed", f"not a JWS: {error}") from None
        header: Any = signed.signature.combined
        nonce = josepy.encode_b64jose(header.nonce) if header.nonce else None
        if nonce not in self._nonces:
            raise ACMEProblem(400, "badNonce", "unknown or reused nonce")
        self._nonces.discard(nonce)
        if header.url != BASE + path:
            raise ACMEProblem(400, "unauthorized", "the JWS url is not the request's")
        if header.kid is not None:
            account = header.kid
            key = self.keys.get(account)
            if key is None:
                raise ACMEProblem(400, "accountDoesNotExist", "no such account")
        elif header.jwk is not None:
            account, key = None, header.jwk
        else:
            raise ACMEProblem(400, "malformed", "neither kid nor jwk")
        if not signed.verify(key):
            raise ACMEProblem(400, "unauthorized", "bad signature")
        return signed.payload, account, key

    def newAccount(self, request: Request, payload: bytes, key: josepy.JWK) -> bytes:
        """
        Answer a new account request.
        """
        registration = messages.NewRegistration.json_loads(payload)
        for url, known in self.keys.items():
            if known.thumbprint() == key.thumbprint():
                request.setHeader("location", url)
                return answerJSON(request, self._registrations[url])
        if registration.only_return_existing:
            raise ACMEProblem(400, "accountDoesNotExist", "no account for this key")
        if self._server.termsOfService and not registration.terms_of_service_agreed:
            raise ACMEProblem(403, "userActionRequired", "agree to the terms of service")
        if self._server.externalAccountKeys:
            self._checkBinding(registration, key)
        url = f"{BASE}/account/{next(self._ids)}"
        self.keys[url] = key
        self._registrations[url] = messages.Registration(
            status="valid", contact=registration.contact
        )
        self._server.accountsCreated += 1
        request.setHeader("location", url)
        return answerJSON(request, self._registrations[url], 201)

    def _checkBinding(self, registration: messages.Registration, key: josepy.JWK) -> None:
        if not registration.external_account_binding:
            raise ACMEProblem(400, "externalAccountRequired", "bind an external account")
        binding = jws.JWS.from_json(registration.external_account_binding)
        kid = binding.signature.combined.kid
        secret = self._server.externalAccountKeys.get(kid) if kid is not None else None
        if secret is None or not binding.verify(josepy.JWKOct(key=secret)):
            raise ACMEProblem(400, "unauthorized", "bad external account binding")
        if josepy.JWK.json_loads(binding.payload).thumbprint() != key.thumbprint():
            raise ACMEProblem(400, "malformed", "the binding is for another key")

    def account(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer a request for, or an update of, the account C{ident}.
        """
        url = f"{BASE}/account/{ident}"
        if url != account:
            raise ACMEProblem(403, "unauthorized", "not your account")
        if payload:
            update = messages.UpdateRegistration.json_loads(payload)
            current = self._registrations[url]
            self._registrations[url] = current.update(
                contact=update.contact if update.contact is not None else current.contact,
                status=update.status or current.status,
            )
        return answerJSON(request, self._registrations[url])

    def keyChange(self, request: Request, ident: str, payload: bytes, account: str) -> bytes:
        """
        Answer a key change of C{account}.
        """
        inner = jws.JWS.json_loads(payload)
        newKey = inner.signature.combined.jwk
        change = KeyChange.json_loads(inner.payload)
        if newKey is None or not inner.verify(newKey) or change.account != account:
            raise ACMEProblem(400, "malformed", "bad key change")
        if change.oldKey.thumbprint() != self.keys[account].thumbprint():
            raise ACMEProblem(400, "malformed", "oldKey is not the account's key")
        self.keys[account] = newKey
        return answerJSON(request, self._registrations[account])
