"""
TLS-ALPN-01 (RFC 8737): the answer a TLS service gives a validation
handshake (the challenge as the C{acme} library reads it is
L{letsencrypt_resource.alpnchallenge}, loaded with the rest of C{acme}).

A validation handshake offers the ALPN protocol C{acme-tls/1} with the
name being validated as its SNI (for an IP address, its reverse-DNS name,
RFC 8738 section 6).  L{ALPNAnswers} selects that protocol, presents a
self-signed certificate carrying the SHA-256 digest of the key
authorization in its critical C{acmeIdentifier} extension, and closes the
connection once the handshake ends.  Any other handshake is left as it
was: no protocol is selected and the service's own certificate is
presented.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from .clienthello import ClientHello
from .domains import isIPAddress
from .keys import generalName

#: The ALPN protocol of validation handshakes.
ACME_TLS_1 = b"acme-tls/1"
#: The critical extension of a validation certificate (RFC 8737 section 3).
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: How many validation certificates are kept built, the latest used; and
#: how many challenges read from the storage are kept.
CACHED_CERTIFICATES = 32
#: How long a challenge read from the storage is used for, in seconds.
FETCHED_FOR = 10.0
#: How long a name whose challenge was not found in the storage is not
#: looked up again, in seconds.
MISSED_FOR = 1.0

#: A pending challenge: its identifier and key authorization.
Pending = tuple[str, str]
#: Looks a record up among the challenges every node published, by its
#: key, within a time on a clock (see
#: L{letsencrypt_resource.challenge.ChallengeResponder.lookupShared}).
SharedLookup = Callable[[str, IReactorTime], "Deferred[str | None] | None"]


def serverName(identifier: str) -> str:
    """
    The SNI name a validation handshake for C{identifier} gives: the name
    itself, or the reverse-DNS name of an IP address.
    """
    if not isIPAddress(identifier):
        return identifier
    return ipaddress.ip_address(identifier).reverse_pointer


def sharedKey(name: str) -> str:
    """
    The token-shaped key under which the challenge of the SNI name C{name}
    is published for other nodes: a digest, so that any name fits.
    """
    return "alpn-" + hashlib.sha256(name.encode("ascii")).hexdigest()


def sharedRecord(identifier: str, keyAuthorization: str) -> str:
    """
    The record published for other nodes: the identifier and the key
    authorization, separated by a space, which neither holds; so the
    HTTP-01 site, which serves key authorizations only, never serves it.
    """
    return f"{identifier} {keyAuthorization}"


def _parseRecord(record: str | None, name: str) -> Pending | None:
    """
    The challenge in C{record}, when it is one for the SNI name C{name}.
    """
    parts = (record or "").split(" ")
    if len(parts) != 2 or serverName(parts[0]) != name:
        return None
    return (parts[0], parts[1])


def validationCertificate(
    identifier: str, keyAuthorization: str, now: datetime.datetime
) -> tuple[crypto.PKey, crypto.X509]:
    """
    A new key and the self-signed validation certificate for
    C{identifier} (a domain name or IP address) and C{keyAuthorization},
    valid from a day before C{now} to a day after.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(keyAuthorization.encode("ascii")).digest()
    altName = generalName(identifier)
    subject = x509.Name([])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([altName]), critical=True)
        .add_extension(
            # The DER OCTET STRING of the 32-byte digest.
            x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return crypto.PKey.from_cryptography_key(key), crypto.X509.from_cryptography(certificate)


class ServedNames:
    """
    The SNI names of the identifiers a server's services certify: their
    domain names, and the reverse-DNS names of their IP addresses.  Only
    these are looked up in the shared storage, so that handshakes with
    made-up names cost no lookup.
    """

    def __init__(self) -> None:
        self._names: Counter[str] = Counter()

    def add(self, identifiers: Iterable[str]) -> None:
        """
        A service certifying C{identifiers} was added.  Counted in a loop:
        C{Counter.update} with a generator cost twice as much, for each of
        thousands of services at start.
        """
        names = self._names
        for identifier in identifiers:
            name = serverName(identifier)
            names[name] = names.get(name, 0) + 1

    def remove(self, identifiers: Iterable[str]) -> None:
        """
        A service certifying C{identifiers} was removed.
        """
        self._names.subtract(serverName(identifier) for identifier in identifiers)
        self._names = +self._names

    def __contains__(self, name: str) -> bool:
        return self._names[name] > 0


class _SharedRead:
    """
    One read of a name's challenge from the shared storage, which every
    handshake for that name waits on; ended early only once every one of
    them has left.

    @ivar ended: Whether the read has ended.
    """

    def __init__(self, looking: Deferred[None]):
        self._looking = looking
        self._waiting: list[Deferred[None]] = []
        self.ended = False
        looking.addBoth(self._done)

    def wait(self) -> Deferred[None]:
        """
        A Deferred that fires once the read has ended; cancelling it is
        leaving.
        """
        if self.ended:
            return succeed(None)
        waiting: Deferred[None] = Deferred(self._left)
        self._waiting.append(waiting)
        return waiting

    def _left(self, waiting: Deferred[None]) -> None:
        self._waiting.remove(waiting)
        if not self._waiting:
            self._looking.cancel()

    def _done(self, result: object) -> None:
        self.ended = True
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.callback(None)


def _refuseValidation(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """
    On a service's own context: end a handshake offering C{acme-tls/1},
    which is for no pending challenge; select nothing for any other.
    """
    return b"" if ACME_TLS_1 in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def _selectValidation(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    """
    On a validation context: select C{acme-tls/1}.
    """
    return ACME_TLS_1 if ACME_TLS_1 in offered else b""


class ALPNAnswers:
    """
    Answers the validation handshakes of a TLS service's contexts.
    """

    def __init__(
        self,
        lookup: Callable[[str], Pending | None],
        clock: IReactorTime,
        shared: SharedLookup | None = None,
        served: ServedNames | None = None,
    ):
        """
        @param lookup: Gives, for an SNI name, the identifier and key
            authorization of its pending challenge, or C{None}.
        @param clock: Closes the validation connections.
        @param shared: Reads the challenges other nodes published.
        @param served: The names whose challenges are read with C{shared};
            none when not given.
        """
        self._lookup = lookup
        self._clock = clock
        self._shared = shared
        self._served = served if served is not None else ServedNames()
        self._fetched: OrderedDict[str, tuple[Pending, float]] = OrderedDict()
        self._reading: dict[str, _SharedRead] = {}
        self._missed: dict[str, float] = {}
        self._built: OrderedDict[Pending, SSL.Context] = OrderedDict()

    def install(self, context: SSL.Context) -> None:
        """
        End the handshakes on C{context} that offer C{acme-tls/1}: a
        validation handshake this service answers has been moved to a
        validation context by L{choose} before it began.
        """
        context.set_alpn_select_callback(_refuseValidation)

    def choose(self, hello: ClientHello, connection: SSL.Connection) -> None:
        """
        Before the handshake of C{hello} on C{connection} begins: when it is
        a validation handshake for a name with a pending challenge, move it
        to that challenge's validation context, so that OpenSSL picks the
        validation certificate whatever the TLS version and cipher (for TLS
        1.2 it picks the certificate before it reads the ALPN list).
        Any other handshake is left on the service's own context.

        @param connection: Its C{app_data} must be its Twisted TLS protocol.
        """
        name = hello.serverName
        if ACME_TLS_1 not in hello.protocols or name is None:
            return
        pending = self._pending(name)
        if pending is not None:
            connection.set_context(self._context(pending))

    def fetch(self, hello: ClientHello) -> Deferred[None] | None:
        """
        Before the handshake of C{hello} goes on: when it is a validation
        handshake for a name this server certifies with no challenge
        pending here, read its challenge from those every node published,
        and keep it for L{FETCHED_FOR} seconds.  Handshakes for one name
        wait on one read; a name not found is not read again for
        L{MISSED_FOR} seconds.

        @return: A Deferred that fires, never failing, once the challenge
            is read or known to be missing; or C{None} when there is
            nothing to read (or too many reads are under way).
        """
        name = hello.serverName
        if ACME_TLS_1 not in hello.protocols or name is None or self._shared is None:
            return None
        if name not in self._served or self._pending(name) is not None:
            return None
        reading = self._reading.get(name)
        if reading is None:
            if self._missed.get(name, 0.0) > self._clock.seconds():
                return None
            looking = self._shared(sharedKey(name), self._clock)
            if looking is None:
                return None
            reading = _SharedRead(looking.addCallback(self._found, name))
            if not reading.ended:
                self._reading[name] = reading
        return reading.wait()

    def _found(self, record: str | None, name: str) -> None:
        """
        Keep the challenge for C{name} read from the storage in C{record},
        or that there is none.
        """
        self._reading.pop(name, None)
        pending = _parseRecord(record, name)
        now = self._clock.seconds()
        if pending is None:
            self._missed[name] = now + MISSED_FOR
            return
        self._missed.pop(name, None)
        self._fetched[name] = (pending, now + FETCHED_FOR)
        while len(self._fetched) > CACHED_CERTIFICATES:
            self._fetched.popitem(last=False)

    def _pending(self, name: str) -> Pending | None:
        """
        The challenge pending for the SNI name C{name}: here, or read from
        the storage a short while ago.
        """
        pending = self._lookup(name)
        if pending is not None:
            return pending
        fetched = self._fetched.get(name)
        if fetched is None:
            return None
        if fetched[1] < self._clock.seconds():
            del self._fetched[name]
            return None
        return fetched[0]

    def _context(self, pending: Pending) -> SSL.Context:
        """
        The validation context of C{pending}: its validation certificate,
        C{acme-tls/1} selected, the connection closed once the handshake
        ends.  Built at its first use and kept among the
        L{CACHED_CERTIFICATES} used last, so that handshakes made in a loop
        cost no key generation each.
        """
        built = self._built.pop(pending, None)
        if built is None:
            now = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)
            key, certificate = validationCertificate(*pending, now)
            built = SSL.Context(SSL.TLS_METHOD)
            built.set_min_proto_version(SSL.TLS1_2_VERSION)
            built.set_options(SSL.OP_NO_TICKET)
            built.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            built.use_certificate(certificate)
            built.use_privatekey(key)
            built.set_alpn_select_callback(_selectValidation)
            built.set_info_callback(self._handshakeDone)
        self._built[pending] = built
        while len(self._built) > CACHED_CERTIFICATES:
            self._built.popitem(last=False)
        return built

    def _handshakeDone(self, connection: SSL.Connection, where: int, ret: int) -> None:
        """
        Close a validation connection once its handshake has ended: at the
        next turn of the reactor, out of OpenSSL's call.
        """
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        protocol = connection.get_app_data()
        if protocol is not None:
            self._clock.callLater(0, protocol.loseConnection)
