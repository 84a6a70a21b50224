"""
Domain names, and IP addresses (RFC 8738), as a certificate may carry them.
"""

from __future__ import annotations

import ipaddress
import re

import idna

#: The most names one certificate may carry.
MAX_NAMES = 100

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
#: A name all of whose labels are valid (L{_LABEL}), in one match.
_NAME = re.compile(rf"{_LABEL.pattern}(?:\.{_LABEL.pattern})*")
#: A name of two valid labels or more (L{_NAME} with a dot), the last not
#: numeric, as written in its normal form: lower-case ASCII, no final dot.
_DOTTED = re.compile(rf"(?:{_LABEL.pattern}\.)+(?![0-9]+\Z){_LABEL.pattern}")


class InvalidDomain(ValueError):
    """
    A name that cannot be in a certificate from an HTTP-01 validating CA.
    """


def normalizeDomain(text: str) -> str:
    """
    Return the lower-case ASCII form of the fully qualified domain C{text}.

    Internationalised names become their IDNA (punycode) form and one final
    dot, naming the DNS root, is dropped.

    @raise InvalidDomain: when C{text} is not a fully qualified domain name,
        is a wildcard or is an IP address.
    """
    name = _withoutRootDot(text.strip()).lower()
    if not name:
        raise InvalidDomain("an empty domain name")
    if "*" in name:
        raise InvalidDomain(f"{text.strip()!r} is a wildcard; HTTP-01 validation cannot prove it")
    # An IP address ends in a digit (IPv4) or holds a colon (IPv6): only
    # then is it worth asking ipaddress.
    if name[-1].isdigit() or ":" in name:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            raise InvalidDomain(f"{name!r} is an IP address, not a domain name")
    name = _toASCII(name, text.strip())
    if "." not in name:
        raise InvalidDomain(f"{name!r} is not a fully qualified domain name")
    _checkLabels(name)
    return name


def normalizeIPAddress(text: str) -> str | None:
    """
    The normal form of the IP address C{text} (IPv6 compressed, lower
    case), or C{None} when it is no IP address.

    @raise InvalidDomain: when it is an address no certificate can be
        validated for: unspecified, multicast, with an IPv6 zone, or an
        IPv4-mapped IPv6 address (write the IPv4 address).
    """
    written = text.strip()
    if not isIPAddress(written):
        return None
    address = ipaddress.ip_address(written)
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise InvalidDomain(f"{written!r} has a zone; a certificate cannot carry one")
        if address.ipv4_mapped is not None:
            raise InvalidDomain(
                f"{written!r} is an IPv4-mapped address; write {address.ipv4_mapped} instead"
            )
    if address.is_unspecified or address.is_multicast:
        raise InvalidDomain(f"{written!r} is not the address of one host")
    return str(address)


def isIPAddress(name: str) -> bool:
    """
    Whether the normalised name C{name} is an IP address: one ends in a
    digit (IPv4) or holds a colon (IPv6), and only then is C{ipaddress}
    asked (its error for a domain name is slow, and a server of 10,000
    services asks about each name at start).
    """
    if not name or not (name[-1].isdigit() or ":" in name):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def normalizeName(text: str) -> str:
    """
    The normal form of C{text}, an IP address (see
    L{normalizeIPAddress}) or a domain name (see L{normalizeDomain}).

    @raise InvalidDomain: when it is neither.
    """
    name = text.strip()
    if _isNormalDomain(name):
        return name
    address = normalizeIPAddress(text)
    return address if address is not None else normalizeDomain(text)


def _isNormalDomain(name: str) -> bool:
    """
    Whether the stripped C{name} is a domain name already in the normal
    form L{normalizeDomain} gives, told by one match: at most 253
    characters of valid labels, two or more, none in the reserved form
    (no C{--} anywhere), the last not numeric (so no IP address either).
    A server of 10,000 services reads a name in this form for each at
    start; any other text takes the full checks.
    """
    return len(name) <= 253 and "--" not in name and _DOTTED.fullmatch(name) is not None


def isHostName(text: str) -> bool:
    """
    Whether C{text} is a valid host name, in ASCII or IDN form.

    Unlike L{normalizeDomain}, a single label such as C{localhost} is valid.
    """
    try:
        _checkLabels(_toASCII(_withoutRootDot(text).lower(), text))
    except InvalidDomain:
        return False
    return True


def _withoutRootDot(name: str) -> str:
    return name[:-1] if name.endswith(".") else name


def _toASCII(name: str, text: str) -> str:
    """
    The IDNA (punycode) form of the lower-case C{name}, written C{text}.
    """
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as error:
        raise InvalidDomain(f"{text!r} is not a valid IDN: {error}") from None


def _checkLabels(name: str) -> None:
    """
    Raise L{InvalidDomain} unless the ASCII C{name} has a valid length and
    valid labels, the last of them not numeric.
    """
    if len(name) > 253:
        raise InvalidDomain(f"{name[:40]}... is longer than 253 characters")
    labels = name.split(".")
    # A name of valid labels, none of them in the reserved form (which
    # holds "--"), is checked in one match, not label by label: 10,000
    # services' names are checked at each start.
    if "--" in name or not _NAME.fullmatch(name):
        for label in labels:
            if not _LABEL.fullmatch(label):
                raise InvalidDomain(
                    f"{name!r} has an invalid label {label!r}: use letters, digits and "
                    "inner hyphens, 1 to 63 characters"
                )
            _checkReservedLabel(name, label)
    if labels[-1].isdigit():
        raise InvalidDomain(f"{name!r} ends in a numeric label")


def _checkReservedLabel(name: str, label: str) -> None:
    """
    Raise L{InvalidDomain} when the label of C{name} has hyphens in its
    third and fourth places (RFC 5891 reserves that form) and is not a
    valid A-label: the C{xn--} form of a valid IDNA U-label, as CAs check.
    """
    if label[2:4] != "--":
        return
    if not label.startswith("xn--"):
        raise InvalidDomain(
            f"{name!r} has a label {label!r} in the reserved form '??--' that "
            "only 'xn--' IDN labels may take"
        )
    try:
        valid = idna.alabel(idna.ulabel(label)).decode("ascii") == label
    except UnicodeError:
        valid = False
    if not valid:
        raise InvalidDomain(f"{name!r} has a label {label!r} that is not a valid IDN A-label")


def parseDomainList(text: str) -> tuple[str, ...]:
    """
    Parse a comma-separated list of domains and IP addresses into their
    normal forms (see L{normalizeName}).

    Order is kept (the first is the certificate's subject) and repeats are
    dropped.

    @raise InvalidDomain: when a name is invalid, an entry or the whole list
        is empty or it holds more than L{MAX_NAMES} names.
    """
    if not text.strip():
        raise InvalidDomain("the list of domains is empty")
    names: list[str] = []
    for position, part in enumerate(text.split(","), start=1):
        if not part.strip():
            raise InvalidDomain(
                f"entry {position} of {text.strip()!r} is empty; remove the extra comma"
            )
        name = normalizeName(part)
        if name not in names:
            names.append(name)
    if len(names) > MAX_NAMES:
        raise InvalidDomain(f"{len(names)} names; a certificate carries at most {MAX_NAMES}")
    return tuple(names)


def domainsLabel(domains: tuple[str, ...]) -> str:
    """
    The human form of a domain set, as shown in events.
    """
    return ", ".join(domains)
