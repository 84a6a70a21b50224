"""
What the resource keeps, typed, over any L{IStorage}: the ACME account of
each CA, each domain set's certificate and key and its renewal state, the
provisional signer, and the pending HTTP-01 challenges that every node
must be able to answer.

The keys, and how each record is written and read, are defined here once.
Nothing needs every certificate parsed up front: L{Records.certificateNames}
lists them without reading them, and each is read when it is asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from ..certificatefacts import CertificateFacts
from ..certificates import CertifiedKey, InvalidCertificate, bundleDigest
from ..config import canonicalURL
from ..coroutines import deferred
from ..keys import PrivateKey, keyFromPEM, keyToPEM
from .interface import ILease, IStorage, StorageError

T = TypeVar("T")


@attrs.frozen
class AccountRecord:
    """
    An ACME account: its key and, once registered, its URL and the contacts
    it was given.
    """

    key: PrivateKey
    url: str | None = None
    contacts: tuple[str, ...] = ()

    def toJSON(self) -> bytes:
        """
        The record as the JSON document a store keeps.
        """
        document = {
            "url": self.url,
            "contacts": list(self.contacts),
            "key": keyToPEM(self.key).decode("ascii"),
        }
        return json.dumps(document, indent=2).encode("utf-8")

    @classmethod
    def fromJSON(cls, data: bytes) -> AccountRecord:
        """
        Read a record L{toJSON} wrote.

        @raise ValueError: when C{data} is not such a record (one nested too
            deep to parse among them).
        """
        try:
            document = json.loads(data)
            return cls(
                keyFromPEM(document["key"].encode("ascii")),
                document.get("url"),
                tuple(document.get("contacts", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"is not a valid account file: {error}") from None
        except RecursionError:
            raise ValueError("is not a valid account file: nested too deep") from None


#: The longest name L{domainsFileName} gives, so that the name, its suffix
#: (C{.json} at most) and the temporary form C{.<name>.<pid>.tmp} of a
#: write fit in the 255 bytes of a file name.
MAX_NAME = 255 - len(".json") - len(f"..{2**32}.tmp")
_DIGEST_LENGTH = 64


def domainsFileName(domains: tuple[str, ...]) -> str:
    """
    The file or folder name for a domain set: its names joined by C{_}; or,
    when that is longer than L{MAX_NAME}, its start, C{_} and the SHA-256
    of the whole in hex.  No set's joined names end so: a 64-character
    label is not a valid domain name.
    """
    joined = "_".join(domains)
    if len(joined.encode("utf-8")) <= MAX_NAME:
        return joined
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()
    return f"{joined[: MAX_NAME - _DIGEST_LENGTH - 1]}_{digest}"


#: The provisional signer's key.
SIGNER_KEY = "provisional-signer.pem"
_CERTIFICATES = "certificates/"
_CHALLENGES = "challenges/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,255}")


def accountKey(acmeURL: str) -> str:
    """
    The key of the account for the ACME directory C{acmeURL}, whichever of
    its equivalent forms is given (see
    L{letsencrypt_resource.config.canonicalURL}).
    """
    return _urlAccountKey(canonicalURL(acmeURL))


def _urlAccountKey(acmeURL: str) -> str:
    """
    The key of the account for the ACME directory written exactly as
    C{acmeURL}: where versions before L{accountKey} stored it.
    """
    return f"accounts/{hashlib.sha256(acmeURL.encode('utf-8')).hexdigest()[:24]}.json"


def certificateKey(domains: tuple[str, ...]) -> str:
    """
    The key of the certificate, key and chain of C{domains}.
    """
    return _certificateKeyNamed(domainsFileName(domains))


def renewalKey(domains: tuple[str, ...]) -> str:
    """
    The key of the renewal state of C{domains}.
    """
    return _renewalKeyNamed(domainsFileName(domains))


def _certificateKeyNamed(name: str) -> str:
    """
    L{certificateKey} of the set whose L{domainsFileName} is C{name}.
    """
    return f"{_CERTIFICATES}{name}.pem"


def _renewalKeyNamed(name: str) -> str:
    """
    L{renewalKey} of the set whose L{domainsFileName} is C{name}.
    """
    return f"renewal/{name}.json"


def challengeKey(token: str) -> str:
    """
    The key of the pending HTTP-01 challenge C{token}.

    @raise StorageError: when C{token} is not a token an ACME CA gives.
    """
    if not _TOKEN.fullmatch(token):
        raise StorageError(repr(token), "is not a valid challenge token")
    return _CHALLENGES + token


def parseAccount(data: bytes) -> AccountRecord:
    """
    The account L{AccountRecord.toJSON} wrote as C{data}.

    @raise ValueError: naming what is wrong.
    """
    return AccountRecord.fromJSON(data)


def parseCertificate(data: bytes) -> CertifiedKey:
    """
    The certificate, key and chain stored as C{data}.

    @raise ValueError: naming what is wrong.
    """
    try:
        return CertifiedKey.fromPEM(data)
    except InvalidCertificate as error:
        raise ValueError(str(error)) from None


def parseRenewalState(data: bytes) -> dict[str, Any]:
    """
    The renewal state stored as C{data}.

    @raise ValueError: naming what is wrong, a document nested too deep to
        parse among them (a C{RecursionError} of the scanner).
    """
    try:
        state = _loads(data)
    except ValueError as error:
        raise ValueError(f"is not a valid renewal state: {error}") from None
    except RecursionError:
        raise ValueError("is not a valid renewal state: nested too deep") from None
    if not isinstance(state, dict):
        raise ValueError("is not a valid renewal state: not an object")
    return state


#: The whitespace C{json.loads} allows after a document (not C{str.isspace}:
#: what else follows is left to C{json.loads} and its error).
_WHITESPACE: Callable[[str, int], re.Match[str]] = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]

#: The scanner C{json.loads} parses a document with (in C when built).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(data: bytes) -> Any:
    """
    C{json.loads(data)}, faster for an object in UTF-8 as
    L{renewalStateJSON} writes it: decoded here as C{json.loads} decodes it
    (C{json.detect_encoding} finds UTF-8 for an opening brace first, not
    followed by a zero byte) and scanned whole by C{json.loads}' own
    scanner, without its calls around it (the whitespace it allows after
    the document skipped, as it skips it).  Anything else (another
    encoding, a document with other text after it, one that does not parse) is
    left to C{json.loads}, for its value or its very error.  The 10,000
    states of a start-up are read in two thirds of the time (CPU, best of
    9: 0.25 s with C{json.loads}, 0.16 s).

    @raise ValueError: as C{json.loads} does.
    """
    if data[:1] == b"{" and data[1:2] != b"\0":
        text = data.decode("utf-8", "surrogatepass")
        try:
            value, end = _scan(text, 0)
        except (StopIteration, ValueError):
            return json.loads(text)
        if _WHITESPACE(text, end).end() == len(text):
            return value
    return json.loads(data)


def parseRecord(
    key: str | Callable[[], str], data: bytes | None, parse: Callable[[bytes], T]
) -> T | None:
    """
    C{parse(data)}, or C{None} when C{data} is.

    @param key: The record's key, or what makes it, called only when it
        is named (every set's keys are not made at start-up).
    @raise StorageError: naming C{key}, when C{parse} raises C{ValueError}.
    """
    if data is None:
        return None
    try:
        return parse(data)
    except ValueError as error:
        raise StorageError(key if isinstance(key, str) else key(), str(error)) from None


class StoredSet:
    """
    What the storage holds for one domain set, read but not parsed: each
    record is parsed when asked for.  A plain class with slots, not an
    C{attrs} one: one is made per set at start-up, and a frozen C{attrs}
    class's C{__init__} takes three times as long; nothing changes its
    fields once made.

    @ivar domains: The set's names.
    @ivar renewal: The renewal state's bytes, C{None}, or the
        L{StorageError} its load failed with.
    @ivar certificate: The same, for the certificate.
    """

    __slots__ = ("certificate", "domains", "renewal")

    def __init__(
        self,
        domains: tuple[str, ...],
        renewal: bytes | StorageError | None,
        certificate: bytes | StorageError | None,
    ):
        self.domains = domains
        self.renewal = renewal
        self.certificate = certificate

    def __repr__(self) -> str:
        return f"StoredSet({self.domains!r}, {self.renewal!r}, {self.certificate!r})"

    def _renewalKey(self) -> str:
        return renewalKey(self.domains)

    def _certificateKey(self) -> str:
        return certificateKey(self.domains)

    def renewalState(self) -> dict[str, Any] | None:
        """
        The renewal state, or C{None}.

        @raise StorageError: when it cannot be loaded or parsed.
        """
        return _parsed(self._renewalKey, self.renewal, parseRenewalState)

    def certifiedKey(
        self, checked: str | None = None, facts: CertificateFacts | None = None
    ) -> CertifiedKey | None:
        """
        The certificate, key and chain, or C{None}.

        @param checked: The L{bundleDigest} of the record as it was when it
            passed its checks, if known: when the record still has it, its
            key is parsed and checked against the certificate at its first
            use, not now (L{CertifiedKey.fromCheckedPEM}).
        @param facts: What was recorded of the certificate, if known: used
            when they are of the record with the digest C{checked}, the
            record still has it and they name this set's names (the
            certificate is then parsed at its first use, not now, and taken
            to carry these names); never for another record, nor for a
            record copied from another set, whose names are parsed and
            checked as without them.

        @raise StorageError: when they cannot be loaded or parsed.
        """
        data = self.certificate
        if not isinstance(data, bytes) or checked is None or checked != bundleDigest(data):
            return _parsed(self._certificateKey, data, parseCertificate)
        names = frozenset(self.domains)
        if facts is not None and facts.digest == checked and facts.names == names:
            # The facts' names are the set's: one set of them is kept.
            vouched: frozenset[str] | None = facts.names
        else:
            facts = vouched = None
        try:
            return CertifiedKey.fromCheckedPEM(data, vouched, facts)
        except ValueError as error:
            raise StorageError(certificateKey(self.domains), str(error)) from None


def _setKeys(sets: list[tuple[str, ...]]) -> list[tuple[str, str]]:
    """
    The keys of the renewal state and of the certificate of each of C{sets}.
    """
    # Each set's file name is made once, for both its keys.
    return [
        (_renewalKeyNamed(name), _certificateKeyNamed(name)) for name in map(domainsFileName, sets)
    ]


def _parsed(
    key: Callable[[], str], data: bytes | StorageError | None, parse: Callable[[bytes], T]
) -> T | None:
    """
    L{parseRecord} of C{data}, or the L{StorageError} its load failed with
    raised.
    """
    if isinstance(data, StorageError):
        raise data
    return parseRecord(key, data, parse)


def renewalStateJSON(state: dict[str, Any]) -> bytes:
    """
    The renewal state C{state} as it is stored.
    """
    return json.dumps(state, indent=2).encode("utf-8")


class Records:
    """
    The resource's records in an L{IStorage}.  Every method returns a
    Deferred; a value that cannot be read fails it with a L{StorageError}
    naming its key.  Writes take the C{fence} they are made under, if any
    (see L{IStorage.store}).
    """

    def __init__(self, storage: IStorage):
        self.storage = storage
        #: Called with a domain set before each certificate stored for it;
        #: a failure of its Deferred (a L{StorageError}) fails the store
        #: (see L{letsencrypt_resource.deployflags.markOthersDue}).
        self.beforeCertificate: Callable[[tuple[str, ...]], Deferred[None]] | None = None

    def _load(self, key: str, parse: Any) -> Deferred[Any]:
        return self.storage.load(key).addCallback(lambda data: parseRecord(key, data, parse))

    @deferred
    async def loadAccount(self, acmeURL: str) -> AccountRecord | None:
        """
        The account for the ACME directory C{acmeURL}, or C{None}: the one
        stored for any of its equivalent forms (see L{accountKey}), else one
        stored by an earlier version under C{acmeURL} exactly as written.
        """
        record: AccountRecord | None = await self._load(accountKey(acmeURL), parseAccount)
        if record is None and _urlAccountKey(acmeURL) != accountKey(acmeURL):
            record = await self._load(_urlAccountKey(acmeURL), parseAccount)
        return record

    def saveAccount(
        self, acmeURL: str, record: AccountRecord, fence: ILease | None = None
    ) -> Deferred[None]:
        """
        Store C{record} as the account for C{acmeURL}.
        """
        return self.storage.store(accountKey(acmeURL), record.toJSON(), fence)

    def certificateNames(self) -> Deferred[list[str]]:
        """
        The names (see L{domainsFileName}) of the stored certificates,
        without reading them.
        """
        suffix = ".pem"
        return self.storage.list(_CERTIFICATES).addCallback(
            lambda keys: [
                k[len(_CERTIFICATES) : -len(suffix)]
                for k in keys
                if k.endswith(suffix) and "/" not in k[len(_CERTIFICATES) :]
            ]
        )

    def loadCertificate(self, domains: tuple[str, ...]) -> Deferred[CertifiedKey | None]:
        """
        The certificate, key and chain stored for C{domains}, or C{None}.
        """
        return self._load(certificateKey(domains), parseCertificate)

    def planSets(self, sets: list[tuple[str, ...]]) -> None:
        """
        Say that the records of the domain sets C{sets} will be read, in
        this order, by L{loadSets}: a storage that reads ahead (see
        L{DirectoryStorage.planReads
        <letsencrypt_resource.storage.directory.DirectoryStorage.planReads>})
        is given their keys; another is told nothing.
        """
        plan = getattr(self.storage, "planReads", None)
        if plan is not None:
            plan([key for pair in _setKeys(sets) for key in pair])

    @deferred
    async def loadSets(self, sets: list[tuple[str, ...]]) -> list[StoredSet]:
        """
        The renewal states and certificates of the domain sets C{sets},
        read together (L{IStorage.loadMany}), not parsed.  When they cannot
        be read together, each record is read alone: one that fails then
        fails only its own parse (see L{StoredSet}).
        """
        pairs = _setKeys(sets)
        keys = [key for pair in pairs for key in pair]
        values: dict[str, bytes | StorageError | None] = {}
        try:
            values.update(await self.storage.loadMany(keys))
        except StorageError:
            for key in keys:
                try:
                    values[key] = await self.storage.load(key)
                except StorageError as error:
                    values[key] = error
        return [
            StoredSet(domains, values[renewal], values[certificate])
            for domains, (renewal, certificate) in zip(sets, pairs, strict=True)
        ]

    def saveCertificate(
        self,
        domains: tuple[str, ...],
        certifiedKey: CertifiedKey,
        fence: ILease | None = None,
    ) -> Deferred[str]:
        """
        Store C{certifiedKey} for C{domains}, its key and chain together.

        @return: A Deferred firing with its key, for events.
        """
        key = certificateKey(domains)
        before = self.beforeCertificate
        marked: Deferred[None] = succeed(None) if before is None else before(domains)
        marked.addCallback(lambda _: self.storage.store(key, certifiedKey.toPEM(), fence))
        return marked.addCallback(lambda _: key)

    def loadRenewalState(self, domains: tuple[str, ...]) -> Deferred[dict[str, Any] | None]:
        """
        The renewal state saved for C{domains} (a JSON-ready dict), or
        C{None}.
        """
        return self._load(renewalKey(domains), parseRenewalState)

    def saveRenewalState(
        self,
        domains: tuple[str, ...],
        state: dict[str, Any],
        fence: ILease | None = None,
    ) -> Deferred[None]:
        """
        Save the renewal state C{state} for C{domains}.
        """
        return self.storage.store(renewalKey(domains), renewalStateJSON(state), fence)

    def loadProvisionalSigner(self) -> Deferred[bytes | None]:
        """
        The PEM of this installation's provisional signing key and
        certificate, or C{None}.
        """
        return self.storage.load(SIGNER_KEY)

    def saveProvisionalSigner(self, pem: bytes) -> Deferred[None]:
        """
        Store this installation's provisional signing key and certificate.
        """
        return self.storage.store(SIGNER_KEY, pem)

    def _challenge(self, token: str, then: Callable[[str], Deferred[T]]) -> Deferred[T]:
        """
        C{then(key)} for the key of the challenge C{token}, or a failure
        when C{token} is not valid.
        """
        try:
            key = challengeKey(token)
        except StorageError:
            return fail()
        return then(key)

    def saveChallenge(
        self, token: str, keyAuthorization: str, fence: ILease | None = None
    ) -> Deferred[None]:
        """
        Make the HTTP-01 challenge C{token}, answered with
        C{keyAuthorization}, readable by every node, before the CA is asked
        to validate it.
        """
        value = keyAuthorization.encode("ascii")
        return self._challenge(token, lambda key: self.storage.store(key, value, fence))

    def loadChallenge(self, token: str) -> Deferred[str | None]:
        """
        The key authorization of the pending challenge C{token}, or
        C{None}.
        """
        return self._challenge(token, lambda key: self._load(key, bytes.decode))

    @property
    def sharesChallenges(self) -> bool:
        """
        Whether challenges are published in the storage for other processes
        to answer: not when only this process uses it (L{IStorage.exclusive};
        a storage without that attribute, written before it, is shared).
        """
        return not getattr(self.storage, "exclusive", False)

    @property
    def challengeLookup(self) -> Callable[[str], Deferred[str | None]] | None:
        """
        L{loadChallenge}, or C{None} when the storage shares no challenges
        (see L{sharesChallenges}).
        """
        return self.loadChallenge if self.sharesChallenges else None

    def deleteChallenge(self, token: str, fence: ILease | None = None) -> Deferred[None]:
        """
        Remove the challenge C{token}, once validated.
        """
        return self._challenge(token, lambda key: self.storage.delete(key, fence))

    def pendingChallenges(self) -> Deferred[list[str]]:
        """
        The tokens of the pending challenges.
        """
        return self.storage.list(_CHALLENGES).addCallback(
            lambda keys: [
                k[len(_CHALLENGES) :] for k in keys if _TOKEN.fullmatch(k[len(_CHALLENGES) :])
            ]
        )
