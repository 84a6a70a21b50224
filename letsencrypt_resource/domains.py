"""
Domain names as a certificate may carry them.
"""

from __future__ import annotations

import ipaddress
import re

import idna

#: The most names one certificate may carry.
MAX_NAMES = 100

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class InvalidDomain(ValueError):
    """
    A name that cannot be in a certificate from an HTTP-01 validating CA.
    """


def normalizeDomain(text: str) -> str:
    """
    Return the lower-case ASCII form of the fully qualified domain C{text}.

    Internationalised names become their IDNA (punycode) form.

    @raise InvalidDomain: when C{text} is not a fully qualified domain name,
        is a wildcard or is an IP address.
    """
    name = text.strip().rstrip(".").lower()
    if not name:
        raise InvalidDomain("an empty domain name")
    if "*" in name:
        raise InvalidDomain(
            f"{text.strip()!r} is a wildcard; HTTP-01 validation cannot prove it"
        )
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise InvalidDomain(f"{name!r} is an IP address, not a domain name")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as error:
            raise InvalidDomain(f"{text.strip()!r} is not a valid IDN: {error}")
    labels = name.split(".")
    if len(labels) < 2:
        raise InvalidDomain(f"{name!r} is not a fully qualified domain name")
    if len(name) > 253:
        raise InvalidDomain(f"{name[:40]}... is longer than 253 characters")
    for label in labels:
        if not _LABEL.match(label):
            raise InvalidDomain(
                f"{name!r} has an invalid label {label!r}: use letters, digits and "
                "inner hyphens, 1 to 63 characters"
            )
    if labels[-1].isdigit():
        raise InvalidDomain(f"{name!r} ends in a numeric label")
    return name


def parseDomainList(text: str) -> tuple[str, ...]:
    """
    Parse a comma-separated list of domains into their normal forms.

    Order is kept (the first is the certificate's subject) and repeats are
    dropped.

    @raise InvalidDomain: when a name is invalid, the list is empty or it
        holds more than L{MAX_NAMES} names.
    """
    names: list[str] = []
    for part in text.split(","):
        name = normalizeDomain(part)
        if name not in names:
            names.append(name)
    if len(names) > MAX_NAMES:
        raise InvalidDomain(
            f"{len(names)} names; a certificate carries at most {MAX_NAMES}"
        )
    return tuple(names)


def domainsLabel(domains: tuple[str, ...]) -> str:
    """
    The human form of a domain set, as shown in events.
    """
    return ", ".join(domains)
