"""
The fallback CAs of the C{lets-encrypt} resource: the C{[cas/<id>]}
sections its C{fallback_cas} option names, in order, each with the account
settings of one more CA to order from when the one before keeps failing.
"""

from __future__ import annotations

import attrs

from .config import (
    ConfigurationError,
    Option,
    _acmeURL,
    _base64url,
    _boolean,
    _build,
    _field,
    _options,
    _path,
    _profileName,
    _readSection,
    _text,
    canonicalURL,
)


@attrs.frozen(kw_only=True)
class CAOptions:
    """
    One fallback CA: where it is, what its server is trusted by, and the
    account settings used with it.  Its account is its own: it is stored
    under its directory URL, apart from the other CAs'.
    """

    section: str
    acmeURL: str = _field(Option("acme_url", _acmeURL, None, "ACME directory URL of this CA."))
    acmeCAFile: str | None = _field(
        Option("acme_ca_file", _path, "", "PEM CA bundle trusted for this CA's ACME server.")
    )
    eabKid: str | None = _field(
        Option("eab_kid", _text, "", "External account binding key identifier at this CA."),
        default=None,
    )
    eabHMACKey: str | None = _field(
        Option("eab_hmac_key", _base64url, "", "External account binding HMAC key at this CA.")
    )
    profile: str | None = _field(
        Option("profile", _profileName, "", "This CA's certificate profile to ask for.")
    )
    #: Whether the operator agrees to this CA's terms of service: an
    #: agreement to the first CA's is not one to this CA's.
    agreeTOS: bool = _field(
        Option("agree_tos", _boolean, "no", "Agree to this CA's terms of service.")
    )


CA_OPTIONS = _options(CAOptions)


def readCA(sections: dict[str, dict[str, str]], section: str, base: str) -> CAOptions:
    """
    The fallback CA of C{section}, one of the read C{sections}, its relative
    paths against C{base}.

    @raise ConfigurationError: when an option is missing, unknown or wrong.
    """
    values = _readSection(section, sections[section], CA_OPTIONS, {})
    if bool(values["eab_kid"]) != bool(values["eab_hmac_key"]):
        missing = "eab_hmac_key" if values["eab_kid"] else "eab_kid"
        raise ConfigurationError(
            section, missing, "external account binding needs both eab_kid and eab_hmac_key"
        )
    options: CAOptions = _build(CAOptions, section, values, base)
    return options


def fallbackCAs(
    sections: dict[str, dict[str, str]],
    resource: str,
    names: tuple[str, ...],
    primaryURL: str,
    base: str,
) -> tuple[CAOptions, ...]:
    """
    The fallback CAs the section C{resource} names, in its order.

    @param primaryURL: The resource's own C{acme_url}: no fallback CA may
        have it, nor two the same, since each CA has its own account.

    @raise ConfigurationError: when a section named is missing or wrong.
    """
    found: list[CAOptions] = []
    seen = {canonicalURL(primaryURL)}
    for name in names:
        if name not in sections:
            raise ConfigurationError(resource, "fallback_cas", f"there is no [{name}] section")
        ca = readCA(sections, name, base)
        if canonicalURL(ca.acmeURL) in seen:
            raise ConfigurationError(
                name,
                "acme_url",
                "is the directory URL of the resource or of another fallback CA; "
                "each CA is listed once",
            )
        seen.add(canonicalURL(ca.acmeURL))
        found.append(ca)
    return tuple(found)
