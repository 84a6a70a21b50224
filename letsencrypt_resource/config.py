"""
The configuration file: INI text in, frozen and fully validated objects out.

L{parseConfiguration} is pure: it reads nothing but the text it is given (and
the working folder, to make paths absolute) and raises L{ConfigurationError}
naming the section and option at the first problem.  Checks that need the
file system (a folder that must exist, a CA bundle that must parse, served
folders compared once links are followed) are in
L{letsencrypt_resource.host}.
"""

from __future__ import annotations

import configparser
import difflib
import functools
import ipaddress
import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from hyperlink import DecodedURL

from .clusteroptions import defaultNodeName, parseClusterDatabase, parseNodeName
from .deploycommand import parseCommand
from .domains import InvalidDomain, isHostName, isIPAddress, normalizeDomain, parseDomainList
from .inireader import readINI
from .inireader import resolvePath as _resolve
from .resourcesection import (
    DEFAULT_STATE_DIRECTORY,
    ENABLED_DEFAULT,
    RESOURCE_TYPE,
    parseBoolean,
)

if TYPE_CHECKING:
    from .caoptions import CAOptions
    from .ftpsoptions import FTPSOptions

LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

#: ACMEv1 directories that Let's Encrypt retired, and their ACMEv2 twins.
ACME_V1_UPGRADES = {
    "https://acme-v01.api.letsencrypt.org/directory": LETS_ENCRYPT_PRODUCTION,
    "https://acme-staging.api.letsencrypt.org/directory": LETS_ENCRYPT_STAGING,
}

KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384")

SERVICE_TYPES = ("https", "ftps")


class ConfigurationError(Exception):
    """
    The configuration is invalid.

    @ivar section: The section holding the problem, or C{None} for the file.
    @ivar option: The option holding the problem, or C{None}.
    @ivar message: What is wrong.
    """

    def __init__(self, section: str | None, option: str | None, message: str):
        super().__init__(section, option, message)
        self.section = section
        self.option = option
        self.message = message

    def __str__(self) -> str:
        where = []
        if self.section is not None:
            where.append(f"[{self.section}]")
        if self.option is not None:
            where.append(f"option '{self.option}'")
        prefix = " ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


@attrs.frozen
class Configuration:
    """
    A whole, valid configuration.

    @ivar resource: The enabled C{lets-encrypt} resource, if any.
    @ivar services: The enabled services.
    @ivar configurationFile: The file it was read from, if any.
    """

    serverName: str
    resource: ResourceOptions | None
    services: tuple[ServiceOptions, ...]
    configurationFile: str | None = None


# Option parsers: each takes the raw text and returns the typed value or
# raises ValueError with a message for the user.


def _text(value: str) -> str:
    return value


_boolean = parseBoolean


#: The digits of a port number (compiled once: C{re.fullmatch} with the
#: text looked the pattern up in C{re}'s cache at each of thousands of
#: services).
_DIGITS = re.compile(r"[0-9]+")


def _port(value: str) -> int:
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{value!r} is not a port number")
    # Past 4,300 digits int() refuses the text with a message of its own.
    number = text.lstrip("0") or "0"
    port = int(number) if len(number) <= 5 else 0
    if not 1 <= port <= 65535:
        raise ValueError(f"{number} is outside the port range 1 to 65535")
    return port


def _address(value: str) -> str:
    address = value.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if address == "localhost":
        return address
    if address == "*":
        raise ValueError("'*' is not an address; use 0.0.0.0 or :: to listen on every interface")
    try:
        return normalizeDomain(address)
    except InvalidDomain as error:
        raise ValueError(f"{value!r} is neither an IP address nor a host name ({error})") from None


def _endpoint(value: str) -> str:
    # Twisted's endpoints (and TLS) are imported only for a configuration
    # that gives an endpoint: an operations command's status reads the
    # configuration without them.
    from .listening import checkDescription

    return checkDescription(value)


def _url(value: str) -> str:
    return _checkURL(value, ("http", "https"))


def _acmeURL(value: str) -> str:
    text = _checkURL(value, ("https",))
    if "@" in urlsplit(text).netloc or "?" in text or "#" in text:
        raise ValueError(
            f"{text!r} holds a user name, a query or a fragment; acme_url is the directory "
            "URL alone (an ACME client sends none of them)"
        )
    return text


def _checkURL(value: str, schemes: tuple[str, ...]) -> str:
    text = value.strip()
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError(f"{text!r} is not a URL: it holds spaces or control characters")
    try:
        url = DecodedURL.from_text(text)
    except Exception:
        raise ValueError(f"{text!r} is not a URL") from None
    if url.scheme == "http" and "http" not in schemes:
        raise ValueError(
            f"{text!r} is plain http://; an ACME server is only reached over https:// (RFC 8555)"
        )
    if url.scheme not in schemes or not url.host:
        written = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"{text!r} is not an {written} URL with a host")
    if not (_isIPAddress(url.host) or isHostName(url.host)):
        raise ValueError(f"{text!r} has an invalid host {url.host!r}")
    if not 1 <= (url.port or 0) <= 65535:
        raise ValueError(f"{text!r} has a port outside the range 1 to 65535")
    return text


def _isIPAddress(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _keyType(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in KEY_TYPES:
        raise ValueError(f"{value!r} is not one of {', '.join(KEY_TYPES)}")
    return lowered


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_CHECK_INTERVAL = 60.0
MAX_CHECK_INTERVAL = 7 * 86400.0


#: The most digits a duration's number is converted from (L{_seconds}).
_MOST_DIGITS = 12

MIN_DEPLOY_TIMEOUT = 1.0
MAX_DEPLOY_TIMEOUT = 3600.0


def _seconds(value: str, low: float, high: float, limits: str) -> float:
    """
    The duration C{value} in seconds, from C{low} to C{high} (C{limits}
    says which in words).
    """
    text = value.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    if not number.isascii() or not number.isdigit():
        raise ValueError(
            f"{value!r} is not a duration: use seconds, or a whole number followed by s, m, h or d"
        )
    # A longer number is out of range: float() of it would overflow, and
    # past 4,300 digits int() refuses it with a message of its own.
    digits = len(number.lstrip("0"))
    seconds = float(int(number) * _DURATION_UNITS[unit]) if digits <= _MOST_DIGITS else math.inf
    if not low <= seconds <= high:
        raise ValueError(f"{value!r} is outside the range {limits}")
    return seconds


def _duration(value: str) -> float:
    return _seconds(value, MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL, "1 minute to 7 days")


def _deployTimeout(value: str) -> float:
    return _seconds(value, MIN_DEPLOY_TIMEOUT, MAX_DEPLOY_TIMEOUT, "1 second to 1 hour")


_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _profileName(value: str) -> str:
    name = value.strip()
    if not _PROFILE.fullmatch(name):
        raise ValueError(f"{value!r} is not a profile name: letters, digits, '.', '_' and '-'")
    return name


#: The challenge types the resource answers.
CHALLENGE_TYPE_NAMES = ("http-01", "tls-alpn-01")


#: The kind of section a fallback CA is configured in.
CA_SECTION = "cas"


def parseSectionNames(value: str) -> tuple[str, ...]:
    """
    Parse the C{fallback_cas} option: section names, separated by commas
    or spaces, each a C{cas/<id>} section, none twice.
    """
    names = tuple(value.replace(",", " ").split())
    for name in names:
        if name.partition("/")[0] != CA_SECTION or not name.partition("/")[2]:
            raise ValueError(f"{name!r} is not the name of a [{CA_SECTION}/<id>] section")
    if len(set(names)) != len(names):
        raise ValueError("a section is named twice")
    return names


def _attempts(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if not 1 <= count <= 100:
        raise ValueError(f"{count} is not from 1 to 100")
    return count


def _fallbackTime(value: str) -> float:
    if value.strip() == "0":
        return 0.0
    return _duration(value)


def _challengeTypes(value: str) -> tuple[str, ...]:
    names = tuple(part.strip().lower() for part in value.split(","))
    for name in names:
        if name not in CHALLENGE_TYPE_NAMES:
            raise ValueError(f"{name!r} is not one of: {', '.join(CHALLENGE_TYPE_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError("names a challenge type twice")
    return names


def _emails(value: str) -> tuple[str, ...]:
    addresses = []
    for part in value.split(","):
        address = part.strip()
        local, at, domain = address.rpartition("@")
        if (
            not at
            or not local
            or any(c.isspace() or c in '<>()[],;:"\\' or ord(c) < 32 for c in local)
            or not isHostName(domain)
            or "." not in domain
        ):
            raise ValueError(f"{address!r} is not an e-mail address")
        if f"mailto:{address}" not in addresses:
            addresses.append(f"mailto:{address}")
    return tuple(addresses)


def _base64url(value: str) -> str:
    key = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        raise ValueError("is not base64url text (letters, digits, '-' and '_')")
    if len(key) % 4 == 1:
        raise ValueError("is not valid base64url: its length is wrong")
    return key


def _domains(value: str) -> tuple[str, ...]:
    try:
        return parseDomainList(value)
    except InvalidDomain as error:
        raise ValueError(str(error)) from None


def _path(value: str) -> str:
    path = value.strip()
    if "\0" in path:
        raise ValueError("a path cannot hold a NUL character")
    return path


@attrs.frozen(cache_hash=True)
class Option:
    """
    One option a section type takes: the single declaration from which the
    configuration file is read, the unknown-option suggestion made, the
    reference checked, and the default of the field it sets taken.

    @ivar name: The option's name in the file.
    @ivar parse: Turns its text into its value; raises C{ValueError} with a
        message for the user.
    @ivar default: The text used when the option is absent or empty; C{None}
        makes the option required.
    @ivar help: What it does, in a line.
    """

    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str

    @property
    def empty(self) -> Any:
        """
        The value of the option left empty: C{""} for text, else C{None}.
        """
        return "" if self.parse is _text else None

    @property
    def value(self) -> Any:
        """
        The value of the default text.

        @raise ValueError: for a required option, which has none.
        """
        if self.default is None:
            raise ValueError(f"{self.name} is required")
        return self.parse(self.default) if self.default else self.empty


#: The key of a field's metadata that holds the L{Option} setting it.
_OPTION = "option"
#: The key of a field's metadata that names what sets a field no L{Option}
#: sets directly.
_SETBY = "set by"


def _field(option: Option, **overrides: Any) -> Any:
    """
    The field that C{option} sets; its default is the option's, as the
    file has it, unless C{overrides} give another one.
    """
    if "default" not in overrides and "factory" not in overrides:
        if option.default is not None:
            overrides["default"] = option.value
    return attrs.field(metadata={_OPTION: option}, **overrides)


def _derived(setBy: str, **arguments: Any) -> Any:
    """
    A field set from something other than one option, C{setBy} naming it.
    """
    return attrs.field(metadata={_SETBY: setBy}, **arguments)


def optionName(field: attrs.Attribute[Any]) -> str:
    """
    What sets C{field} of L{ResourceOptions} or L{ServiceOptions}, as the
    configuration file spells it.
    """
    option = field.metadata.get(_OPTION)
    return option.name if option is not None else str(field.metadata[_SETBY])


def _options(cls: type) -> tuple[Option, ...]:
    """
    The options that set the fields of C{cls}, in their order.
    """
    return tuple(
        field.metadata[_OPTION] for field in attrs.fields(cls) if _OPTION in field.metadata
    )


_TYPE = Option("type", _text, None, "The kind of component this section configures.")
_NAME = Option("name", _text, "", "A label shown in events.")
_DESCRIPTION = Option("description", _text, "", "Free text for the operator.")
_ENABLED = Option("enabled", _boolean, ENABLED_DEFAULT, "Start this component with the server.")
_DEBUG = Option("debug", _boolean, "no", "Log low-level details (event 20000).")
_ENDPOINT_KINDS = "(tcp:, tcp6:, unix:, systemd:)"


def _nameField() -> Any:
    # Without a name, the component is known by its section.
    return _field(_NAME, default=attrs.Factory(lambda self: self.section, takes_self=True))


def _checkChallengeListener(
    options: ResourceOptions, attribute: attrs.Attribute[Any], value: bool
) -> None:
    """
    A challenge site needs an address or an endpoint, as in the file:
    without, it would listen on every interface.
    """
    if value and options.endpoint is None and not options.address:
        raise ValueError("a challenge site needs an address or an endpoint")


@attrs.frozen(kw_only=True)
class ResourceOptions:
    """
    The options of the C{lets-encrypt} resource section.  Each field is
    declared once, with the option of the file that sets it: built in code,
    only C{section} and C{stateDirectory} are needed (and C{address} or
    C{endpoint} for a challenge site), the others default as the file's
    options do.
    """

    section: str = _derived("the section's name")
    name: str = _nameField()
    description: str = _field(_DESCRIPTION)
    debug: bool = _field(_DEBUG)
    address: str = _field(
        Option(
            "address",
            _address,
            "",
            "Address of the HTTP-01 challenge site; needed unless endpoint is set.",
        ),
        default="",
    )
    port: int = _field(Option("port", _port, "80", "Port of the HTTP-01 challenge site."))
    #: The endpoint description the challenge site listens on, replacing
    #: C{address} and C{port}.
    endpoint: str | None = _field(
        Option(
            "endpoint",
            _endpoint,
            "",
            f"Twisted endpoint of the challenge site {_ENDPOINT_KINDS}, "
            "instead of address and port.",
        )
    )
    #: Whether the resource opens a challenge site of its own; without, a
    #: host serves L{LetsEncryptResource.challengeResource} itself.
    challengeSite: bool = _field(
        Option(
            "challenge_site",
            _boolean,
            "yes",
            "Open a challenge site; no when the host serves the challenge resource.",
        ),
        validator=_checkChallengeListener,
    )
    acmeURL: str = _field(
        Option("acme_url", _acmeURL, LETS_ENCRYPT_PRODUCTION, "ACME directory URL.")
    )
    stateDirectory: str = _field(
        Option(
            "state_directory",
            _path,
            "",
            "Where the account, keys and certificates are kept; empty for a "
            "'lets-encrypt' folder beside the configuration file.",
        ),
        default=attrs.NOTHING,
    )
    storeDirectory: str | None = _field(
        Option("store_directory", _path, "", "Also export certificates as PEM files here.")
    )
    redirectURL: str | None = _field(
        Option("redirect_url", _url, "", "Redirect other requests to this URL.")
    )
    acmeCAFile: str | None = _field(
        Option("acme_ca_file", _path, "", "PEM CA bundle trusted for the ACME server.")
    )
    keyType: str = _field(
        Option("key_type", _keyType, "rsa-2048", "Type of the certificates' keys.")
    )
    #: Seconds between two regular checks.
    checkInterval: float = _field(
        Option(
            "check_interval",
            _duration,
            "1d",
            "Time between two regular checks: seconds, or a number with s, m, h or d.",
        )
    )
    #: The CA's certificate profile to ask for, if any.
    profile: str | None = _field(
        Option("profile", _profileName, "", "The CA's certificate profile to ask for.")
    )
    #: The challenge types to answer, in order of preference.
    challengeTypes: tuple[str, ...] = _field(
        Option(
            "challenge_types",
            _challengeTypes,
            "http-01",
            "Challenge types to answer, in order: http-01, tls-alpn-01 or both.",
        )
    )
    #: Keep the private key across renewals.
    reuseKey: bool = _field(
        Option("reuse_key", _boolean, "no", "Keep the private key across renewals.")
    )
    #: Whether the operator agrees to the CA's terms of service.
    agreeTOS: bool = _field(
        Option(
            "agree_tos",
            _boolean,
            "no",
            "Agree to the CA's terms of service when registering an account.",
        )
    )
    #: Contact addresses for the account, as C{mailto:} URLs.
    contacts: tuple[str, ...] = _field(
        Option("contact_email", _emails, "", "E-mail addresses for the account."),
        default=(),
    )
    #: A PEM file with the key of an existing account to use.
    accountKeyFile: str | None = _field(
        Option("account_key", _path, "", "PEM key of an existing account to use.")
    )
    #: External account binding: the key identifier and the HMAC key
    #: (base64url), for CAs that require it.
    eabKid: str | None = _field(
        Option("eab_kid", _text, "", "External account binding key identifier.")
    )
    eabHMACKey: str | None = _field(
        Option("eab_hmac_key", _base64url, "", "External account binding HMAC key.")
    )
    #: The program and arguments run after each new certificate is stored
    #: and exported (see L{letsencrypt_resource.deploy}).
    deployCommand: tuple[str, ...] | None = _field(
        Option(
            "deploy_command",
            parseCommand,
            "",
            "Command run after each new certificate is stored and exported (no shell).",
        )
    )
    #: Seconds the deploy command may run before its process group is killed.
    deployTimeout: float = _field(
        Option(
            "deploy_timeout",
            _deployTimeout,
            "60",
            "Time limit of the deploy command: seconds, or a number with s, m or h.",
        )
    )
    #: Where the Prometheus metrics are served; off when neither
    #: C{metricsAddress} nor C{metricsEndpoint} is set.
    metricsAddress: str = _field(
        Option("metrics_address", _address, "", "Address of the Prometheus metrics listener."),
        default="",
    )
    metricsPort: int | None = _field(
        Option("metrics_port", _port, "", "Port of the Prometheus metrics listener.")
    )
    metricsEndpoint: str | None = _field(
        Option(
            "metrics_endpoint",
            _endpoint,
            "",
            f"Twisted endpoint of the metrics listener {_ENDPOINT_KINDS}, "
            "instead of metrics_address and metrics_port.",
        )
    )
    #: The C{[cas/<id>]} sections of the CAs to order from, in order, when
    #: the one before keeps failing (see L{letsencrypt_resource.carotation}).
    fallbackCANames: tuple[str, ...] = _field(
        Option(
            "fallback_cas",
            parseSectionNames,
            "",
            "The [cas/<id>] sections of the fallback CAs, in order.",
        ),
        default=(),
    )
    #: Failed attempts with a CA before the next one is ordered from.
    fallbackAfter: int = _field(
        Option(
            "fallback_after",
            _attempts,
            "3",
            "Failed attempts with a CA before ordering from the next one.",
        )
    )
    #: Seconds since the first failed attempt with a CA that count against
    #: it before the next one is ordered from; 0: no time limit.
    fallbackAfterTime: float = _field(
        Option(
            "fallback_after_time",
            _fallbackTime,
            "6h",
            "Time after the first failed attempt with a CA before ordering from the next one, "
            "if fallback_after is not reached first: a number with s, m, h or d; 0 for none.",
        )
    )
    #: The fallback CAs, read from the sections C{fallbackCANames} names.
    fallbackCAs: tuple[CAOptions, ...] = _derived("fallback_cas", default=())
    #: The ACMEv1 URL the configuration named, when it was upgraded.
    upgradedFromURL: str | None = _derived("acme_url", default=None)
    #: The libpq connection string of the cluster's database; C{None} for
    #: a single node, on the state directory.
    clusterDatabase: str | None = _field(
        Option(
            "cluster_database",
            parseClusterDatabase,
            "",
            "libpq connection string of the cluster's PostgreSQL; empty for a single node.",
        )
    )
    #: The file the key sealing private keys in the database is made from.
    clusterKeyFile: str | None = _field(
        Option(
            "cluster_key_file",
            _path,
            "",
            "File of 32 random bytes or more, the same on every node; required "
            "with cluster_database.",
        )
    )
    #: This node's label in events.
    nodeName: str = _field(
        Option("node_name", parseNodeName, "", "This node's label; default: the host name."),
        factory=defaultNodeName,
    )


@attrs.frozen(kw_only=True)
class ServiceOptions:
    """
    The options of one C{https} service section, each field declared once
    with the option of the file that sets it.
    """

    section: str = _derived("the section's name")
    type: str = _field(_TYPE)
    name: str = _nameField()
    description: str = _field(_DESCRIPTION)
    debug: bool = _field(_DEBUG)
    address: str = _field(
        Option(
            "address",
            _address,
            "",
            "Address the service listens on; needed unless endpoint is set.",
        ),
        default="",
    )
    port: int = _field(Option("port", _port, "443", "Port the service listens on."))
    #: The endpoint description the service listens on, replacing
    #: C{address} and C{port}.
    endpoint: str | None = _field(
        Option(
            "endpoint",
            _endpoint,
            "",
            f"Twisted endpoint the service listens on {_ENDPOINT_KINDS}, "
            "instead of address and port.",
        )
    )
    domains: tuple[str, ...] = _field(
        Option(
            "ssl_domains",
            _domains,
            None,
            "Domains and IP addresses of the service's certificate.",
        )
    )
    path: str = _field(Option("path", _path, None, "Folder served, read-only."))
    #: Serve and list hidden (dot) files and folders.
    hiddenFiles: bool = _field(
        Option("hidden_files", _boolean, "no", "Serve and list hidden (dot) files and folders.")
    )
    #: The options of a C{type = ftps} section; C{None} for C{https}.
    ftps: FTPSOptions | None = _derived("the options of type = ftps", default=None)


#: The options of each section type, as the file reads them: those that
#: choose the component, then those of its fields.
RESOURCE_OPTIONS = (_TYPE, _ENABLED) + _options(ResourceOptions)
SERVICE_OPTIONS = (_ENABLED,) + _options(ServiceOptions)
SERVER_OPTIONS = (Option("name", _text, "", "The server's name, for labels."),)


def _unknownOption(name: str, known: list[str]) -> str:
    """
    The message for the unknown option C{name}, with the known option
    closest to it, if one is close.
    """
    closest = difflib.get_close_matches(name, known, n=1)
    if not closest:
        return "unknown option"
    return f"unknown option; did you mean '{closest[0]}'?"


def _readSection(
    section: str,
    read: dict[str, str],
    options: tuple[Option, ...],
    parsed: dict[tuple[Callable[[str], Any], str], Any],
) -> dict[str, Any]:
    """
    The values of the options of C{section}, whose text is C{read}: the
    defaults of the options it leaves out or empty, parsed once for all
    sections, and the values of those it sets.  A section with a problem
    is read again option by option (L{_readEachOption}), so that the first
    problem in the options' order is the one reported.

    @param parsed: The values the options' parsers made of each text so
        far (every parser is a pure function of its text, and its values
        are immutable): sections that share a text share its value, so
        that ten thousand services on one address parse it once.
    """
    known, defaults, byName = _sectionReader(options)
    values = dict(defaults)
    for name, text in read.items():
        option = byName.get(name)
        if option is None:
            raise ConfigurationError(section, name, _unknownOption(name, known))
        raw = text.strip()
        if not raw:
            continue
        key = (option.parse, raw)
        value = parsed.get(key, _UNPARSED)
        if value is _UNPARSED:
            try:
                value = parsed[key] = option.parse(raw)
            except Exception:
                # An unknown option further on is the problem reported, as
                # it is before any parser runs when the section is read
                # option by option; a parser's own error comes after.
                _checkKnown(section, read, known, byName)
                return _readEachOption(section, read, options)
        values[name] = value
    if len(values) < len(options):  # a required option is missing
        return _readEachOption(section, read, options)
    return values


def _checkKnown(
    section: str, read: dict[str, str], known: list[str], byName: dict[str, Option]
) -> None:
    """
    Raise L{ConfigurationError} at the first option of C{read} that is not
    one of C{byName}.
    """
    for name in read:
        if name not in byName:
            raise ConfigurationError(section, name, _unknownOption(name, known))


#: What no option's parser returns: a text not parsed yet (L{_readSection}).
_UNPARSED = object()

#: What a section's options are read with (L{_sectionReader}).
_Reader = tuple[list[str], dict[str, Any], dict[str, Option]]

#: The reader of each tuple of options, by the tuple's identity, with the
#: tuple, held so that no other object takes that identity.
_READERS: dict[int, tuple[tuple[Option, ...], _Reader]] = {}


def _sectionReader(options: tuple[Option, ...]) -> _Reader:
    """
    The names of C{options}, the values of those that have a default, and
    each option by its name.

    Made once for each tuple of options, found again by the tuple's
    identity: hashing the tuple hashes each option in it (9 us a section,
    0.09 s of CPU at 10,000 sections).  Every caller passes one of a few
    tuples made once (see L{_serviceOptions}).
    """
    found = _READERS.get(id(options))
    if found is None:
        defaults = {o.name: o.value for o in options if o.default is not None}
        reader = [o.name for o in options], defaults, {o.name: o for o in options}
        _READERS[id(options)] = found = (options, reader)
    return found[1]


def _readEachOption(
    section: str, read: dict[str, str], options: tuple[Option, ...]
) -> dict[str, Any]:
    """
    The values of the options of C{section}, whose text is C{read}, read
    in the options' order.

    @raise ConfigurationError: at the first option that is required and
        missing, or cannot be parsed.
    """
    values: dict[str, Any] = {}
    for option in options:
        raw = read.get(option.name, "").strip()
        if not raw:
            if option.default is None:
                raise ConfigurationError(section, option.name, "is required")
            raw = option.default
        if not raw:
            values[option.name] = option.empty
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as error:
            raise ConfigurationError(section, option.name, str(error)) from None
    return values


def _written(read: dict[str, str]) -> set[str]:
    """
    The options a section whose text is C{read} sets to something.
    """
    return {name for name, value in read.items() if value.strip()}


def _listenerAddress(
    section: str, values: dict[str, Any], read: dict[str, str], needed: bool = True
) -> str:
    """
    The C{address} of a section that listens: required without an
    C{endpoint}, and refused beside one, as is C{port}, since the endpoint
    replaces both (an address thought to restrict an endpoint that listens
    everywhere would not).

    @param read: The section's text, option by option.
    @param needed: Whether the section listens at all.
    """
    endpoint = values["endpoint"]
    if endpoint is not None:
        written = _written(read)
        for name in ("address", "port"):
            if name in written:
                raise ConfigurationError(
                    section,
                    name,
                    f"cannot be set beside endpoint, which replaces address and "
                    f"port; name the interface and port in the endpoint ({endpoint})",
                )
        return ""
    if values["address"] is None:
        if not needed:
            return ""
        raise ConfigurationError(section, "address", "is required unless endpoint is set")
    return str(values["address"])


def _build(cls: type[Any], section: str, values: dict[str, Any], base: str, **given: Any) -> Any:
    """
    The options of C{cls} for C{section}: each field from the value of its
    option, paths resolved against C{base}, an empty option leaving the
    field's default, and C{given} as they are.
    """
    for field, option in _optionFields(cls):
        if field in given:
            continue
        value = values[option.name]
        if value is None or value == "":
            continue
        given[field] = _resolve(base, value) if option.parse is _path else value
    return cls(section=section, **given)


#: The fields of each options class that an option sets (L{_optionFields}).
_OPTION_FIELDS: dict[type, tuple[tuple[str, Option], ...]] = {}


def _optionFields(cls: type[Any]) -> tuple[tuple[str, Option], ...]:
    """
    The fields of C{cls} that an option sets, by name, with that option.
    """
    if cls not in _OPTION_FIELDS:
        _OPTION_FIELDS[cls] = tuple(
            (field.name, field.metadata[_OPTION])
            for field in attrs.fields(cls)
            if _OPTION in field.metadata
        )
    return _OPTION_FIELDS[cls]


def _resource(
    section: str, values: dict[str, Any], base: str, read: dict[str, str]
) -> ResourceOptions:
    if bool(values["eab_kid"]) != bool(values["eab_hmac_key"]):
        missing = "eab_hmac_key" if values["eab_kid"] else "eab_kid"
        raise ConfigurationError(
            section,
            missing,
            "external account binding needs both eab_kid and eab_hmac_key",
        )
    if values["cluster_database"] and not values["cluster_key_file"]:
        raise ConfigurationError(
            section,
            "cluster_key_file",
            "is required with cluster_database: the key that seals private keys in the database",
        )
    _checkMetricsListener(section, values)
    acmeURL = values["acme_url"]
    upgradedFrom = None
    if acmeURL.rstrip("/") in ACME_V1_UPGRADES:
        upgradedFrom, acmeURL = acmeURL, ACME_V1_UPGRADES[acmeURL.rstrip("/")]
    options: ResourceOptions = _build(
        ResourceOptions,
        section,
        values,
        base,
        address=_listenerAddress(section, values, read, values["challenge_site"]),
        acmeURL=acmeURL,
        upgradedFromURL=upgradedFrom,
        stateDirectory=_resolve(base, values["state_directory"] or DEFAULT_STATE_DIRECTORY),
    )
    return options


def _checkMetricsListener(section: str, values: dict[str, Any]) -> None:
    """
    The metrics listener is C{metrics_address} with C{metrics_port}, or
    C{metrics_endpoint} alone, or off.
    """
    address, port = values["metrics_address"], values["metrics_port"]
    if values["metrics_endpoint"] is not None:
        for name in ("metrics_address", "metrics_port"):
            if values[name] is not None:
                raise ConfigurationError(
                    section,
                    name,
                    "cannot be set beside metrics_endpoint, which replaces "
                    "metrics_address and metrics_port",
                )
    elif (address is None) != (port is None):
        missing = "metrics_port" if port is None else "metrics_address"
        raise ConfigurationError(
            section, missing, "the metrics listener needs both metrics_address and metrics_port"
        )


def _service(
    section: str, values: dict[str, Any], base: str, read: dict[str, str]
) -> ServiceOptions:
    # The options the section sets are worked out only where they matter
    # (an endpoint, an ftps service): not for each of 10,000 https services.
    given: dict[str, Any] = {}
    if values["type"] == "ftps":
        from .ftpsoptions import ftpsDefaults, ftpsOptions

        given["ftps"] = ftpsOptions(section, values, base)
        given.update(ftpsDefaults(given["ftps"], _written(read)))
    options: ServiceOptions = _build(
        ServiceOptions,
        section,
        values,
        base,
        address=_listenerAddress(section, values, read),
        **given,
    )
    return options


@functools.cache
def _serviceOptions(kind: str) -> tuple[Option, ...]:
    """
    The options a service section of type C{kind} takes: the same tuple
    at each call.
    """
    if kind == "ftps":
        from .ftpsoptions import FTPS_OPTIONS

        return SERVICE_OPTIONS + FTPS_OPTIONS
    return SERVICE_OPTIONS


def _checkIdentifier(section: str) -> None:
    kind, _, uuid = section.partition("/")
    if not uuid or "/" in uuid or "|" in uuid or uuid != uuid.strip():
        raise ConfigurationError(
            section,
            None,
            f"section names are '{kind}/<id>' where the id is a non-empty string "
            "without '/', '|' or surrounding spaces",
        )


def _iniProblem(error: configparser.Error) -> str:
    """
    What is wrong with a file that is not INI, by line number only: the
    file named may be one its reader may not see (a command run through
    sudo), so none of its text is repeated.
    """
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno} comes before any [section] header"
    if isinstance(error, configparser.ParsingError):
        numbers = [str(number) for number, _ in error.errors]
        which = f"lines {', '.join(numbers)}" if len(numbers) > 1 else f"line {numbers[0]}"
        return f"{which} cannot be parsed (expected 'option = value')"
    return type(error).__name__


def parseConfiguration(
    text: str, baseDirectory: str, configurationFile: str | None = None
) -> Configuration:
    """
    Parse and validate the INI C{text} of a configuration file.

    @param baseDirectory: The folder relative paths are resolved against,
        usually the configuration file's own.
    @param configurationFile: The file C{text} was read from, if any: no
        service may publish it.

    @raise ConfigurationError: at the first problem found.
    """
    try:
        sections = readINI(text)
    except configparser.DuplicateSectionError as error:
        raise ConfigurationError(error.section, None, "the section appears twice") from None
    except configparser.DuplicateOptionError as error:
        raise ConfigurationError(
            error.section, error.option, "the option appears twice in its section"
        ) from None
    except configparser.Error as error:
        raise ConfigurationError(
            None, None, f"the file is not valid INI: {_iniProblem(error)}"
        ) from None

    serverName = ""
    parsed: dict[tuple[Callable[[str], Any], str], Any] = {}
    resources: list[ResourceOptions] = []
    services: list[ServiceOptions] = []
    for section, read in sections.items():
        if section == "server":
            serverName = _readSection(section, read, SERVER_OPTIONS, parsed)["name"]
            continue
        kind = section.partition("/")[0]
        if kind == "resources":
            _checkIdentifier(section)
            kind_ = read.get("type", "").strip()
            if kind_ != RESOURCE_TYPE:
                raise ConfigurationError(
                    section,
                    "type",
                    f"{kind_!r} is not a known resource type; use {RESOURCE_TYPE!r}"
                    if kind_
                    else "is required",
                )
            values = _readSection(section, read, RESOURCE_OPTIONS, parsed)
            if values["enabled"]:
                built = _resource(section, values, baseDirectory, read)
                fallbacks = _fallbacks(sections, built, baseDirectory)
                resources.append(attrs.evolve(built, fallbackCAs=fallbacks))
        elif kind == "services":
            _checkIdentifier(section)
            kind_ = read.get("type", "").strip()
            if kind_ not in SERVICE_TYPES:
                raise ConfigurationError(
                    section,
                    "type",
                    f"{kind_!r} is not a known service type; use one of {', '.join(SERVICE_TYPES)}"
                    if kind_
                    else "is required",
                )
            values = _readSection(section, read, _serviceOptions(kind_), parsed)
            if values["enabled"]:
                services.append(_service(section, values, baseDirectory, read))
        elif kind == CA_SECTION:
            from .caoptions import readCA

            _checkIdentifier(section)
            readCA(sections, section, baseDirectory)
        else:
            raise ConfigurationError(
                section,
                None,
                "unknown section; use [server], [resources/<id>], [services/<id>] or [cas/<id>]",
            )

    if len(resources) > 1:
        raise ConfigurationError(
            resources[1].section,
            "type",
            f"a second {RESOURCE_TYPE!r} resource; {resources[0].section} is "
            "already one and only one may be enabled",
        )
    resource = resources[0] if resources else None
    if resource is None and not services:
        raise ConfigurationError(
            None,
            None,
            f"the file enables no {RESOURCE_TYPE!r} resource and no service, so "
            "the server would do nothing; add a [resources/<id>] section with "
            f"type = {RESOURCE_TYPE} (see sample.ini)",
        )
    if resource is None:
        for service in services:
            raise ConfigurationError(
                service.section,
                "ssl_domains",
                f"needs an enabled {RESOURCE_TYPE!r} resource to obtain its "
                "certificate, and there is none",
            )
    configuration = Configuration(serverName, resource, tuple(services), configurationFile)
    checkComponents(configuration)
    checkServedPaths(configuration, os.path.abspath)
    return configuration


def _fallbacks(
    sections: dict[str, dict[str, str]], resource: ResourceOptions, base: str
) -> tuple[CAOptions, ...]:
    """
    The fallback CAs C{resource} names, read from their sections.
    """
    from .caoptions import fallbackCAs

    return fallbackCAs(sections, resource.section, resource.fallbackCANames, resource.acmeURL, base)


def checkComponents(configuration: Configuration) -> None:
    """
    The checks between the components of C{configuration}: no two
    listeners on one address and port, no two components with one name.
    A reload runs them again on the new services beside the resource as
    it runs.

    @raise ConfigurationError: at the first clash.
    """
    services = list(configuration.services)
    _checkPortClashes(configuration.resource, services)
    _checkNames(configuration.resource, services)
    _checkIPProfile(configuration.resource, services)


#: The profiles of Let's Encrypt that issue no IP address certificates.
LETS_ENCRYPT_NO_IP_PROFILES = (None, "classic", "tlsserver")


@functools.lru_cache(maxsize=256)
def canonicalURL(url: str) -> str:
    """
    The one form of the directory URL C{url} (an C{acme_url} checked by
    L{_acmeURL}: no user name, query or fragment) among all its equivalent
    forms, the one URL that tells two CAs apart: its scheme and host in
    lower case, no final dot, no default port, no final slash.  A URL
    already written so, or one that does not parse or cannot be written
    again (a saved one may hold anything, a lone surrogate among them), is
    returned as it is: this never raises.  The last few are remembered:
    each set's renewal state names its CA's, compared at each attempt and
    each metrics scrape.
    """
    try:
        parsed = DecodedURL.from_text(url)
        path = tuple(parsed.path)
        while path and not path[-1]:
            path = path[:-1]
        host = parsed.host.lower().rstrip(".")
        return str(parsed.replace(scheme=parsed.scheme.lower(), host=host, path=path).to_text())
    except ValueError:  # UnicodeError among them
        return url


_LETS_ENCRYPT_KEYS = frozenset(
    canonicalURL(url) for url in (LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING)
)


def _checkIPProfile(resource: ResourceOptions | None, services: list[ServiceOptions]) -> None:
    """
    Refuse a service with IP addresses when one of the CAs that may order
    its certificate, the resource's own or a fallback CA, is Let's Encrypt
    and the profile asked of it is one it issues no IP address
    certificates on.
    """
    if resource is None:
        return
    cas = [(resource.section, resource.acmeURL, resource.profile)]
    cas += [(ca.section, ca.acmeURL, ca.profile) for ca in resource.fallbackCAs]
    refusing = [
        section
        for section, url, profile in cas
        if canonicalURL(url) in _LETS_ENCRYPT_KEYS and profile in LETS_ENCRYPT_NO_IP_PROFILES
    ]
    if not refusing:
        return
    for service in services:
        addresses = [name for name in service.domains if isIPAddress(name)]
        if addresses:
            raise ConfigurationError(
                service.section,
                "ssl_domains",
                f"holds the IP address {addresses[0]}, and Let's Encrypt issues "
                f"certificates for IP addresses on its 'shortlived' profile only: set "
                f"profile = shortlived in {refusing[0]}",
            )


#: The addresses that listen on every interface of a port.
_WILDCARDS = frozenset({"0.0.0.0", "::"})
#: What a loopback name (C{localhost}, C{*.localhost}: RFC 6761) resolves to.
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _bindings(address: str) -> frozenset[str]:
    """
    The addresses a listener on C{address} may bind: an IPv4 address
    mapped into IPv6 is the IPv4 address, a loopback name is every address
    it may resolve to, other host names are compared as written.
    """
    if address == "localhost" or address.endswith(".localhost"):
        return _LOOPBACK
    if address.startswith("::ffff:"):
        mapped = ipaddress.IPv6Address(address).ipv4_mapped
        if mapped is not None:
            return frozenset({str(mapped)})
    return frozenset({address})


def _checkNames(resource: ResourceOptions | None, services: list[ServiceOptions]) -> None:
    """
    Each component's C{name} labels its events and its service in the
    server: no two may share one.
    """
    components: list[ResourceOptions | ServiceOptions] = list(services)
    if resource is not None:
        components.insert(0, resource)
    seen: dict[str, str] = {}
    for component in components:
        other = seen.setdefault(component.name, component.section)
        if other != component.section:
            raise ConfigurationError(
                component.section,
                "name",
                f"{component.name!r} is already the name of [{other}]",
            )


def _checkPortClashes(resource: ResourceOptions | None, services: list[ServiceOptions]) -> None:
    """
    Raise L{ConfigurationError} at the first listener whose address and
    port another listener already uses, in one pass over the listeners.
    Listeners on an C{endpoint} other than C{tcp:} and C{tcp6:} are not
    compared: what they bind is only known as they listen.
    """
    components: list[ResourceOptions | ServiceOptions] = list(services)
    if resource is not None and resource.challengeSite:
        components.insert(0, resource)
    listeners = [listener for listener in map(_listenerBinding, components) if listener is not None]
    if resource is not None:
        listeners.extend(_metricsBinding(resource))
    # Per port: the first listener, the one on a wildcard address, and the
    # listener of each bound address.
    first: dict[int, tuple[str, str]] = {}
    wildcard: dict[int, tuple[str, str]] = {}
    bound: dict[tuple[int, str], tuple[str, str]] = {}
    # Per address, worked out once (10,000 services may share one): what
    # it binds, in order, and whether that is a wildcard.
    bindings: dict[str, tuple[list[str], bool]] = {}
    for section, option, address, port in listeners:
        found = bindings.get(address)
        if found is None:
            addresses = _bindings(address)
            found = bindings[address] = (sorted(addresses), bool(addresses & _WILDCARDS))
        ordered, onWildcard = found
        clash = wildcard.get(port)
        if clash is None and onWildcard:
            clash = first.get(port)
        if clash is None:
            for each in ordered:
                clash = bound.get((port, each))
                if clash is not None:
                    break
        if clash is not None:
            other, otherAddress = clash
            used = "" if otherAddress == address else f" on {otherAddress}"
            raise ConfigurationError(
                section,
                option,
                f"{address} port {port} is already used by [{other}]{used}",
            )
        first.setdefault(port, (section, address))
        if onWildcard:
            wildcard[port] = (section, address)
        for each in ordered:
            bound[(port, each)] = (section, address)


def _listenerBinding(
    options: ResourceOptions | ServiceOptions,
) -> tuple[str, str, str, int] | None:
    """
    The section, the option naming the port, the address and the port of
    a listener, or C{None} when its endpoint binds nothing comparable.
    """
    if options.endpoint is None:
        return options.section, "port", options.address, options.port
    from .listening import tcpBinding

    binding = tcpBinding(options.endpoint)
    if binding is None:
        return None
    return options.section, "endpoint", _interface(binding[0]), binding[1]


def _interface(text: str) -> str:
    """
    The interface an endpoint binds, written as addresses are compared.
    """
    try:
        return _address(text)
    except ValueError:
        return text


def _metricsBinding(resource: ResourceOptions) -> list[tuple[str, str, str, int]]:
    """
    The binding of C{resource}'s metrics listener, as L{_listenerBinding}
    gives it, when it has a comparable one.
    """
    if resource.metricsPort is not None:
        return [(resource.section, "metrics_port", resource.metricsAddress, resource.metricsPort)]
    if not resource.metricsEndpoint:
        return []
    from .listening import tcpBinding

    binding = tcpBinding(resource.metricsEndpoint)
    if binding is None:
        return []
    return [(resource.section, "metrics_endpoint", _interface(binding[0]), binding[1])]


def _secrets(configuration: Configuration) -> list[tuple[str, str, bool]]:
    """
    What no service may publish, as (description, path, whether it is a
    folder): the folders that hold private keys, the account key and the
    configuration file, which may hold the external account binding key.
    The C{acme_ca_file} is left out: it holds public CA certificates only.
    """
    secrets: list[tuple[str, str, bool]] = []
    resource = configuration.resource
    if resource is not None:
        for option, path, folder in (
            ("state_directory", resource.stateDirectory, True),
            ("store_directory", resource.storeDirectory, True),
            ("account_key", resource.accountKeyFile, False),
            ("cluster_key_file", resource.clusterKeyFile, False),
        ):
            if path is not None:
                secrets.append((f"[{resource.section}] {option}", path, folder))
    if configuration.configurationFile is not None:
        secrets.append(("the configuration file", configuration.configurationFile, False))
    return secrets


def _relation(served: str, secret: str, folder: bool) -> str | None:
    """
    How the served folder C{served} exposes C{secret}, or C{None} when it
    does not; both are absolute and normal.
    """
    common = os.path.commonpath([served, secret])
    if served == secret:
        return "is"
    if common == served:
        return "contains"
    if folder and common == secret:
        return "is inside"
    return None


def checkServedPaths(configuration: Configuration, resolve: Callable[[str], str]) -> None:
    """
    Refuse a service whose C{path} is, contains or lies inside a place that
    holds secrets (see L{_secrets}): it would publish them.

    @param resolve: Makes each path absolute: C{os.path.abspath} compares
        them as written, C{os.path.realpath} once links are followed, so that
        an alias made of a symbolic link cannot slip past.

    @raise ConfigurationError: naming the service's C{path} and the option
        of the secret.
    """
    secrets = [
        (what, written, resolve(written), folder)
        for what, written, folder in _secrets(configuration)
    ]
    checked: set[str] = set()
    for service in configuration.services:
        # Services that serve one folder are refused or accepted together.
        if service.path in checked:
            continue
        checked.add(service.path)
        served = resolve(service.path)
        for what, written, secret, folder in secrets:
            relation = _relation(served, secret, folder)
            if relation is None:
                continue
            resolved = ""
            if (served, secret) != (service.path, written):
                resolved = f" (once links are followed, {served} and {secret})"
            raise ConfigurationError(
                service.section,
                "path",
                f"{service.path} {relation} {what} {written}{resolved}: the "
                "service would publish its secrets; serve a folder that holds "
                "none",
            )


def loadConfiguration(path: str) -> Configuration:
    """
    Read and parse the configuration file at C{path}.

    @raise ConfigurationError: when the file cannot be read or is invalid.
    """
    try:
        with open(path, encoding="utf-8-sig") as stream:
            text = stream.read()
    except OSError as error:
        raise ConfigurationError(
            None, None, f"cannot read the configuration file {path}: {error.strerror}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigurationError(
            None, None, f"the configuration file {path} is not UTF-8 text: {error}"
        ) from None
    path = os.path.abspath(path)
    return parseConfiguration(text, os.path.dirname(path), path)
