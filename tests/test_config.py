"""
Tests for L{letsencrypt_resource.config}.
"""

from __future__ import annotations

import ipaddress
import os
from unittest import mock

import attrs
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import config
from letsencrypt_resource.config import (
    LETS_ENCRYPT_PRODUCTION,
    LETS_ENCRYPT_STAGING,
    RESOURCE_OPTIONS,
    SERVICE_OPTIONS,
    Configuration,
    ConfigurationError,
    Option,
    ResourceOptions,
    ServiceOptions,
    _serviceOptions,
    checkComponents,
    loadConfiguration,
    optionName,
    parseConfiguration,
)
from letsencrypt_resource.ftpsoptions import FTPS_OPTIONS, FTPSOptions
from tests.helpers import configuration
from tests.helpers.configuration import BASE, resource, service

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample.ini")


def withResource(**overrides: str | None) -> str:
    """
    A valid service beside a resource with some options changed.
    """
    return resource(**overrides) + service()


def withService(**overrides: str | None) -> str:
    """
    A valid resource beside a service with some options changed.
    """
    return resource() + service(**overrides)


def parse(text: str) -> Configuration:
    """
    Parse C{text} against L{BASE}.
    """
    return parseConfiguration(text, BASE)


class ConfigurationErrorTests(SynchronousTestCase):
    """
    Tests for L{ConfigurationError}.
    """

    def test_attributes(self) -> None:
        """
        The section, option and message are kept as attributes.
        """
        error = ConfigurationError("services/s1", "port", "is wrong")
        self.assertEqual(
            (error.section, error.option, error.message),
            ("services/s1", "port", "is wrong"),
        )

    def test_strWithSectionAndOption(self) -> None:
        """
        The text names the section in brackets, then the option.
        """
        error = ConfigurationError("services/s1", "port", "is wrong")
        self.assertEqual(str(error), "[services/s1] option 'port': is wrong")

    def test_strWithSectionOnly(self) -> None:
        """
        Without an option, the text names only the section.
        """
        error = ConfigurationError("services/s1", None, "is wrong")
        self.assertEqual(str(error), "[services/s1]: is wrong")

    def test_strForTheFile(self) -> None:
        """
        Without a section or option, the text is the message alone.
        """
        self.assertEqual(str(ConfigurationError(None, None, "is wrong")), "is wrong")


class BadConfigurationTests(SynchronousTestCase):
    """
    Each kind of invalid configuration raises L{ConfigurationError} naming
    the section and option at fault and saying what is wrong.
    """

    def assertConfigurationError(
        self,
        text: str,
        section: str | None,
        option: str | None,
        *fragments: str,
    ) -> ConfigurationError:
        """
        Assert parsing C{text} fails at C{section} and C{option} with a
        message holding every one of C{fragments}.
        """
        error = self.assertRaises(ConfigurationError, parse, text)
        self.assertEqual((error.section, error.option), (section, option))
        for fragment in fragments:
            self.assertIn(fragment, error.message)
        return error

    def test_unknownResourceType(self) -> None:
        """
        A resource C{type} other than C{lets-encrypt} is refused.
        """
        self.assertConfigurationError(
            withResource(type="acme"),
            "resources/r1",
            "type",
            "'acme' is not a known resource type; use 'lets-encrypt'",
        )

    def test_unknownServiceType(self) -> None:
        """
        A service C{type} other than C{https} is refused.
        """
        self.assertConfigurationError(
            withService(type="ftp"),
            "services/s1",
            "type",
            "'ftp' is not a known service type; use one of https",
        )

    def test_missingType(self) -> None:
        """
        A section without a C{type} says that it is required.
        """
        self.assertConfigurationError(
            withResource(type=None), "resources/r1", "type", "is required"
        )

    def test_missingResourceAddress(self) -> None:
        """
        The resource's C{address} is required.
        """
        self.assertConfigurationError(
            withResource(address=None), "resources/r1", "address", "is required"
        )

    def test_emptyResourceAddress(self) -> None:
        """
        An empty C{address} counts as missing.
        """
        self.assertConfigurationError(
            withResource(address=""), "resources/r1", "address", "is required"
        )

    def test_missingServiceAddress(self) -> None:
        """
        A service's C{address} is required.
        """
        self.assertConfigurationError(
            withService(address=None), "services/s1", "address", "is required"
        )

    def test_missingServiceDomains(self) -> None:
        """
        A service's C{ssl_domains} is required.
        """
        self.assertConfigurationError(
            withService(ssl_domains=None), "services/s1", "ssl_domains", "is required"
        )

    def test_missingServicePath(self) -> None:
        """
        A service's C{path} is required.
        """
        self.assertConfigurationError(withService(path=None), "services/s1", "path", "is required")

    def test_portNotANumber(self) -> None:
        """
        A C{port} that is not a number is refused.
        """
        self.assertConfigurationError(
            withService(port="https"),
            "services/s1",
            "port",
            "'https' is not a port number",
        )

    def test_portZero(self) -> None:
        """
        Port 0 is outside the port range.
        """
        self.assertConfigurationError(
            withResource(port="0"),
            "resources/r1",
            "port",
            "0 is outside the port range 1 to 65535",
        )

    def test_portTooLarge(self) -> None:
        """
        Port 65536 is outside the port range.
        """
        self.assertConfigurationError(
            withService(port="65536"),
            "services/s1",
            "port",
            "65536 is outside the port range 1 to 65535",
        )

    def test_portWithUnderscore(self) -> None:
        """
        Python's integer syntax is not a port number: only ASCII digits are.
        """
        self.assertConfigurationError(
            withService(port="4_43"), "services/s1", "port", "not a port number"
        )

    def test_badAddress(self) -> None:
        """
        An C{address} that is neither an IP address nor a host name is
        refused.
        """
        self.assertConfigurationError(
            withService(address="300.1.2.3"),
            "services/s1",
            "address",
            "'300.1.2.3' is neither an IP address nor a host name",
        )

    def test_starAddress(self) -> None:
        """
        C{*} as an address is refused with a hint at the wildcard addresses.
        """
        self.assertConfigurationError(
            withResource(address="*"),
            "resources/r1",
            "address",
            "use 0.0.0.0 or :: to listen on every interface",
        )

    def test_acmeURLNotHTTPS(self) -> None:
        """
        An C{acme_url} that is not https is refused.
        """
        self.assertConfigurationError(
            withResource(acme_url="ftp://acme.example.com/directory"),
            "resources/r1",
            "acme_url",
            "is not an https:// URL with a host",
        )

    def test_acmeURLPlainHTTP(self) -> None:
        """
        A plain C{http://} C{acme_url} is refused, saying that ACME needs
        https, rather than answered by the CA with a bare 400 at run time.
        """
        self.assertConfigurationError(
            withResource(acme_url="http://acme.example.com/directory"),
            "resources/r1",
            "acme_url",
            "'http://acme.example.com/directory' is plain http://; an ACME "
            "server is only reached over https://",
        )

    def test_acmeURLWithoutHost(self) -> None:
        """
        An C{acme_url} without a host is refused.
        """
        self.assertConfigurationError(
            withResource(acme_url="https:///directory"),
            "resources/r1",
            "acme_url",
            "is not an https:// URL with a host",
        )

    def test_acmeURLWithBadHost(self) -> None:
        """
        An C{acme_url} whose host is not a valid host name is refused.
        """
        self.assertConfigurationError(
            withResource(acme_url="https://acme..example.com/directory"),
            "resources/r1",
            "acme_url",
            "has an invalid host 'acme..example.com'",
        )

    def test_acmeURLWithBadPort(self) -> None:
        """
        An C{acme_url} with a port outside the port range is refused.
        """
        self.assertConfigurationError(
            withResource(acme_url="https://acme.example.com:70000/directory"),
            "resources/r1",
            "acme_url",
            "has a port outside the range 1 to 65535",
        )

    def test_redirectURLNotHTTP(self) -> None:
        """
        A C{redirect_url} that is not http or https is refused.
        """
        self.assertConfigurationError(
            withResource(redirect_url="mailto:admin@example.com"),
            "resources/r1",
            "redirect_url",
            "is not an http:// or https:// URL with a host",
        )

    def test_redirectURLWithoutHost(self) -> None:
        """
        A C{redirect_url} without a host is refused.
        """
        self.assertConfigurationError(
            withResource(redirect_url="https://"),
            "resources/r1",
            "redirect_url",
            "is not an http:// or https:// URL with a host",
        )

    def test_redirectURLWithSpace(self) -> None:
        """
        A C{redirect_url} holding a space is refused: it would end up in a
        C{Location} header.
        """
        self.assertConfigurationError(
            withResource(redirect_url="https://www.example.com/a b"),
            "resources/r1",
            "redirect_url",
            "holds spaces or control characters",
        )

    def test_invalidDomain(self) -> None:
        """
        An invalid name in C{ssl_domains} is refused, naming it.
        """
        self.assertConfigurationError(
            withService(ssl_domains="files.example.com, www..example.com"),
            "services/s1",
            "ssl_domains",
            "'www..example.com' has an invalid label ''",
        )

    def test_invalidALabel(self) -> None:
        """
        A name with an C{xn--} label that is not the A-label of a valid IDN
        is refused, naming it, in C{ssl_domains} as in an C{address}.
        """
        self.assertConfigurationError(
            withService(ssl_domains="files.example.com, xn--zz.example.test"),
            "services/s1",
            "ssl_domains",
            "'xn--zz.example.test' has a label 'xn--zz' that is not a valid IDN A-label",
        )
        self.assertConfigurationError(
            withResource(address="xn--zz.example.test"),
            "resources/r1",
            "address",
            "'xn--zz.example.test'",
            "not a valid IDN A-label",
        )

    def test_wildcardDomain(self) -> None:
        """
        A wildcard in C{ssl_domains} is refused: HTTP-01 cannot prove it.
        """
        self.assertConfigurationError(
            withService(ssl_domains="*.example.com"),
            "services/s1",
            "ssl_domains",
            "'*.example.com' is a wildcard; HTTP-01 validation cannot prove it",
        )

    def test_emptyDomainEntry(self) -> None:
        """
        An empty entry in C{ssl_domains} is refused, saying where it is.
        """
        self.assertConfigurationError(
            withService(ssl_domains="a.example.com,,b.example.com"),
            "services/s1",
            "ssl_domains",
            "entry 2 of 'a.example.com,,b.example.com' is empty",
        )

    def test_tooManyNames(self) -> None:
        """
        More than 100 names in C{ssl_domains} are refused.
        """
        names = ",".join(f"n{index}.example.com" for index in range(101))
        self.assertConfigurationError(
            withService(ssl_domains=names),
            "services/s1",
            "ssl_domains",
            "101 names; a certificate carries at most 100",
        )

    def test_twoEnabledResources(self) -> None:
        """
        A second enabled C{lets-encrypt} resource is refused, naming the
        first.
        """
        self.assertConfigurationError(
            resource("r1") + resource("r2", port="8080") + service(),
            "resources/r2",
            "type",
            "a second 'lets-encrypt' resource; resources/r1 is already one",
        )

    def test_serviceWithoutResource(self) -> None:
        """
        A service needs an enabled C{lets-encrypt} resource for its
        certificate.
        """
        self.assertConfigurationError(
            service(),
            "services/s1",
            "ssl_domains",
            "needs an enabled 'lets-encrypt' resource",
        )

    def test_unknownOption(self) -> None:
        """
        An option a section does not take is refused.
        """
        self.assertConfigurationError(
            withService(listen="0.0.0.0"), "services/s1", "listen", "unknown option"
        )

    def test_unknownOptionClosest(self) -> None:
        """
        An unknown option close to a known one of its section names it.
        """
        self.assertConfigurationError(
            withService(ssl_domain="a.example.com"),
            "services/s1",
            "ssl_domain",
            "unknown option; did you mean 'ssl_domains'?",
        )

    def test_unknownOptionBeforeValues(self) -> None:
        """
        An unknown option is the problem reported, even after an option
        whose value is wrong, or beside a required option left out.
        """
        self.assertConfigurationError(
            withService(port="x") + "listen = 0.0.0.0\n",
            "services/s1",
            "listen",
            "unknown option",
        )
        self.assertConfigurationError(
            withService(path=None) + "listen = 0.0.0.0\n",
            "services/s1",
            "listen",
            "unknown option",
        )

    def test_unknownOptionBeforeAnyParserError(self) -> None:
        """
        An unknown option is the problem reported even after an option
        whose parser fails with something other than C{ValueError}, as it
        is before any parser runs when a section is read option by option.
        """

        def broken(text: str) -> str:
            raise RuntimeError("a bug")

        options = (Option("first", broken, None, "Fails."),)
        with self.assertRaises(ConfigurationError) as caught:
            config._readSection("s", {"first": "x", "bogus": "y"}, options, {})
        self.assertEqual(
            (caught.exception.section, caught.exception.option, caught.exception.message),
            ("s", "bogus", "unknown option"),
        )

    def test_hugeNumbers(self) -> None:
        """
        A duration or a port with hundreds or thousands of digits is out
        of its range (not an C{OverflowError}, nor C{int}'s own message
        about its digit limit), and reported before a later unknown option.
        """
        for digits in (400, 5000):
            huge = "1" + "0" * digits
            for option in ("check_interval", "deploy_timeout", "fallback_after_time"):
                self.assertConfigurationError(
                    withResource(**{option: huge}),
                    "resources/r1",
                    option,
                    f"{huge!r} is outside the range",
                )
            self.assertConfigurationError(
                withService(port=huge), "services/s1", "port", f"{huge} is outside the port range"
            )
        self.assertConfigurationError(
            resource(check_interval="1" + "0" * 400, bogus="1") + service(),
            "resources/r1",
            "bogus",
            "unknown option",
        )
        self.assertEqual(parse(withService(port="0" * 50 + "443")).services[0].port, 443)

    def test_resourceOptionInService(self) -> None:
        """
        Options are checked against the section's own kind.
        """
        self.assertConfigurationError(
            withService(key_type="rsa-2048"),
            "services/s1",
            "key_type",
            "unknown option",
        )

    def test_unknownSectionKind(self) -> None:
        """
        A section other than C{server}, C{resources/<id>} and
        C{services/<id>} is refused.
        """
        self.assertConfigurationError(
            withService() + configuration.section("listeners/l1", {"port": "21"}),
            "listeners/l1",
            None,
            "unknown section; use [server], [resources/<id>], [services/<id>] or [cas/<id>]",
        )

    def test_pipeInSectionId(self) -> None:
        """
        A section id holding C{|} is refused.
        """
        self.assertConfigurationError(
            resource() + service("s|1"),
            "services/s|1",
            None,
            "section names are 'services/<id>'",
            "without '/', '|'",
        )

    def test_emptySectionId(self) -> None:
        """
        A section with an empty id is refused.
        """
        self.assertConfigurationError(
            resource("") + service(),
            "resources/",
            None,
            "section names are 'resources/<id>' where the id is a non-empty string",
        )

    def test_duplicateSection(self) -> None:
        """
        A section that appears twice is refused.
        """
        self.assertConfigurationError(
            withService() + service(port="8443"),
            "services/s1",
            None,
            "the section appears twice",
        )

    def test_duplicateOption(self) -> None:
        """
        An option that appears twice in a section is refused.
        """
        self.assertConfigurationError(
            resource() + service() + "[server]\nname = a\nName = b\n",
            "server",
            "name",
            "the option appears twice in its section",
        )

    def test_badEnabled(self) -> None:
        """
        An C{enabled} that is not a boolean is refused.
        """
        self.assertConfigurationError(
            withService(enabled="sometimes"),
            "services/s1",
            "enabled",
            "'sometimes' is not yes or no",
        )

    def test_badDebug(self) -> None:
        """
        A C{debug} that is not a boolean is refused.
        """
        self.assertConfigurationError(
            withResource(debug="verbose"),
            "resources/r1",
            "debug",
            "'verbose' is not yes or no",
        )

    def test_unknownKeyType(self) -> None:
        """
        A C{key_type} that is not supported is refused, listing those that
        are.
        """
        self.assertConfigurationError(
            withResource(key_type="dsa-1024"),
            "resources/r1",
            "key_type",
            "'dsa-1024' is not one of rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384",
        )

    def test_sameListener(self) -> None:
        """
        Two services on the same address and port are refused, at the second.
        """
        self.assertConfigurationError(
            resource()
            + service("s1", address="192.0.2.1")
            + service("s2", address="192.0.2.1", ssl_domains="other.example.com"),
            "services/s2",
            "port",
            "192.0.2.1 port 443 is already used by [services/s1]",
        )

    def test_listenerClashesWithResource(self) -> None:
        """
        A service on the resource's port clashes with it when either listens
        on every interface.
        """
        self.assertConfigurationError(
            withService(address="192.0.2.1", port="80"),
            "services/s1",
            "port",
            "192.0.2.1 port 80 is already used by [resources/r1]",
        )

    def test_listenerClashesAcrossWildcards(self) -> None:
        """
        The IPv4 and IPv6 wildcard addresses clash with each other.
        """
        self.assertConfigurationError(
            resource() + service("s1") + service("s2", address="[::]"),
            "services/s2",
            "port",
            ":: port 443 is already used by [services/s1]",
        )

    def test_nothingToRun(self) -> None:
        """
        A file that enables no resource and no service (empty, a lone
        C{[server]}, or every section disabled) is refused with one error
        for the whole file, rather than starting a server that does nothing.
        """
        for text in (
            "",
            "# nothing yet\n",
            "[server]\nname = files.example.com\n",
            resource(enabled="no") + service(enabled="no"),
        ):
            self.assertConfigurationError(
                text,
                None,
                None,
                "the file enables no 'lets-encrypt' resource and no service",
                "add a [resources/<id>] section",
            )

    def test_localhostClashesWithLoopback(self) -> None:
        """
        C{localhost} (or a name under it) resolves to a loopback address, so
        it clashes with C{127.0.0.1} and C{::1} on the same port, whichever
        comes first.
        """
        other = "other.example.com"
        for first, second in (
            ("127.0.0.1", "localhost"),
            ("localhost", "127.0.0.1"),
            ("[::1]", "localhost"),
            ("localhost", "::1"),
            ("files.localhost", "localhost"),
        ):
            self.assertConfigurationError(
                resource()
                + service("s1", address=first)
                + service("s2", address=second, ssl_domains=other),
                "services/s2",
                "port",
                f"{second} port 443 is already used by [services/s1] on {first.strip('[]')}",
            )

    def test_mappedIPv4ClashesWithIPv4(self) -> None:
        """
        An IPv4 address written as an IPv4-mapped IPv6 address is the same
        listener as the IPv4 address.
        """
        self.assertConfigurationError(
            resource()
            + service("s1", address="192.0.2.1")
            + service("s2", address="::ffff:192.0.2.1", ssl_domains="o.example.com"),
            "services/s2",
            "port",
            "::ffff:c000:201 port 443 is already used by [services/s1] on 192.0.2.1",
        )

    def test_invalidINI(self) -> None:
        """
        Text that is not INI is refused, naming the line.
        """
        error = self.assertConfigurationError(
            "address = 0.0.0.0\n" + withService(),
            None,
            None,
            "the file is not valid INI",
        )
        self.assertIn("line 1 comes before any [section] header", error.message)

    def test_invalidINIQuotesNothing(self) -> None:
        """
        The error names the lines that do not parse by number, and repeats
        none of their text: the file may be one whose reader, running the
        command through sudo, may not see.
        """
        for text, expected in [
            ("root:$6$secret:19000:0:99999:7:::\n", "line 1 comes before"),
            ("[server]\nsecret one\nname = x\nsecret two\n", "lines 2, 4 cannot be parsed"),
        ]:
            error = self.assertRaises(ConfigurationError, parseConfiguration, text, "/srv")
            self.assertIn(expected, error.message)
            self.assertNotIn("secret", str(error))


class EndpointOptionTests(SynchronousTestCase):
    """
    The C{endpoint} option of the resource and of the services, and the
    resource's C{challenge_site}.
    """

    assertConfigurationError = BadConfigurationTests.assertConfigurationError

    def test_endpointReplacesAddress(self) -> None:
        """
        With an C{endpoint}, no C{address} is needed: the endpoint is kept,
        stripped, and the address is empty.
        """
        configuration = parse(
            resource(address=None, endpoint=" systemd:domain=INET:index=0 ")
            + service(address=None, endpoint="tcp6:443:interface=\\:\\:")
        )
        assert configuration.resource is not None
        [serviceOptions] = configuration.services
        self.assertEqual(
            (configuration.resource.endpoint, configuration.resource.address),
            ("systemd:domain=INET:index=0", ""),
        )
        self.assertEqual(
            (serviceOptions.endpoint, serviceOptions.address),
            ("tcp6:443:interface=\\:\\:", ""),
        )

    def test_noEndpointByDefault(self) -> None:
        """
        Without an C{endpoint}, listeners have none and the resource opens
        its challenge site.
        """
        configuration = parse(withService())
        assert configuration.resource is not None
        self.assertEqual(
            (
                configuration.resource.endpoint,
                configuration.resource.challengeSite,
                configuration.services[0].endpoint,
            ),
            (None, True, None),
        )

    def test_addressRequiredWithoutEndpoint(self) -> None:
        """
        Without an C{endpoint}, the C{address} is still required, and the
        message says that an endpoint would do instead.
        """
        self.assertConfigurationError(
            withService(address=None),
            "services/s1",
            "address",
            "is required unless endpoint is set",
        )

    def test_addressOrPortBesideEndpointRefused(self) -> None:
        """
        An C{address} or C{port} beside an C{endpoint} is refused: the
        endpoint replaces both, so an address meant to keep a listener on
        loopback would not.
        """
        for option, value in (("address", "127.0.0.1"), ("port", "8443")):
            overrides: dict[str, str | None] = {"address": None, "endpoint": "tcp:443"}
            overrides[option] = value
            self.assertConfigurationError(
                withService(**overrides),
                "services/s1",
                option,
                "cannot be set beside endpoint",
                "(tcp:443)",
            )

    def test_sslEndpointRefused(self) -> None:
        """
        An C{ssl:} endpoint is refused, naming the section and option: the
        services' TLS is the resource's own.
        """
        self.assertConfigurationError(
            withService(address=None, endpoint="ssl:443:privateKey=/etc/key.pem"),
            "services/s1",
            "endpoint",
            "is an ssl: endpoint",
        )

    def test_invalidEndpointRefused(self) -> None:
        """
        An endpoint description Twisted cannot parse is refused at load,
        naming the section and option.
        """
        self.assertConfigurationError(
            withResource(address=None, endpoint="tcp:eighty"),
            "resources/r1",
            "endpoint",
            "'tcp:eighty' is not a valid endpoint description",
        )

    def test_tcpEndpointClashes(self) -> None:
        """
        A C{tcp:} endpoint is compared with the other listeners, and its
        C{endpoint} option is the one named.
        """
        self.assertConfigurationError(
            withService(address=None, endpoint="tcp:80:interface=192.0.2.1"),
            "services/s1",
            "endpoint",
            "192.0.2.1 port 80 is already used by [resources/r1]",
        )
        self.assertConfigurationError(
            resource()
            + service("s1", address="::1")
            + service(
                "s2",
                address=None,
                endpoint="tcp6:443:interface=0\\:0\\:0\\:0\\:0\\:0\\:0\\:1",
                ssl_domains="other.example.com",
            ),
            "services/s2",
            "endpoint",
            "::1 port 443 is already used by [services/s1]",
        )

    def test_otherEndpointsNotCompared(self) -> None:
        """
        Listeners on C{unix:} and C{systemd:} endpoints are not compared,
        as what they bind is only known when they listen.
        """
        configuration = parse(
            resource(address=None, endpoint="systemd:domain=INET:index=0")
            + service("s1", address=None, endpoint="systemd:domain=INET:index=0")
            + service(
                "s2",
                address=None,
                endpoint="unix:/run/files.sock",
                ssl_domains="other.example.com",
            )
        )
        self.assertEqual(len(configuration.services), 2)

    def test_noChallengeSite(self) -> None:
        """
        With C{challenge_site = no}, the resource needs no address and
        takes no port: a service may listen on port 80.
        """
        configuration = parse(resource(address=None, challenge_site="no") + service(port="80"))
        assert configuration.resource is not None
        self.assertFalse(configuration.resource.challengeSite)


class LoadConfigurationErrorTests(SynchronousTestCase):
    """
    The errors of L{loadConfiguration} reading a file.
    """

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 is refused, naming it.
        """
        path = self.mktemp()
        with open(path, "wb") as stream:
            stream.write("[server]\nname = café\n".encode("latin-1"))
        error = self.assertRaises(ConfigurationError, loadConfiguration, path)
        self.assertEqual((error.section, error.option), (None, None))
        self.assertIn(f"the configuration file {path} is not UTF-8 text", error.message)

    def test_missingFile(self) -> None:
        """
        A file that does not exist is refused, naming it and the reason.
        """
        path = self.mktemp()
        error = self.assertRaises(ConfigurationError, loadConfiguration, path)
        self.assertEqual((error.section, error.option), (None, None))
        self.assertEqual(
            error.message,
            f"cannot read the configuration file {path}: No such file or directory",
        )

    def test_folder(self) -> None:
        """
        A folder is not a configuration file.
        """
        path = self.mktemp()
        os.mkdir(path)
        error = self.assertRaises(ConfigurationError, loadConfiguration, path)
        self.assertIn(f"cannot read the configuration file {path}", error.message)

    def test_parseErrorsPassThrough(self) -> None:
        """
        Errors in the text of a readable file are those of
        L{parseConfiguration}.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(withService(port="0"))
        error = self.assertRaises(ConfigurationError, loadConfiguration, path)
        self.assertEqual((error.section, error.option), ("services/s1", "port"))


class GoodConfigurationTests(SynchronousTestCase):
    """
    Valid configurations give the options with their defaults filled in.
    """

    def test_sample(self) -> None:
        """
        The C{sample.ini} shipped at the root of the project is valid.
        """
        root = os.path.dirname(SAMPLE)
        configuration = loadConfiguration(SAMPLE)
        self.assertEqual(
            configuration,
            Configuration(
                serverName="files.example.com",
                resource=ResourceOptions(
                    section="resources/17c97aa6-1c17-4485-878c-68b427b82f35",
                    name="lets-encrypt-public",
                    description="Certificates for the public file services",
                    address="0.0.0.0",
                    port=80,
                    acmeURL=LETS_ENCRYPT_STAGING,
                    stateDirectory=os.path.join(root, "lets-encrypt"),
                    storeDirectory=None,
                    redirectURL=None,
                    acmeCAFile=None,
                    keyType="rsa-2048",
                    debug=False,
                    agreeTOS=True,
                ),
                services=(
                    ServiceOptions(
                        section="services/de43-bc54-342a",
                        type="https",
                        name="files-https",
                        description="Public downloads",
                        address="0.0.0.0",
                        port=443,
                        domains=("files.example.com", "www.files.example.com"),
                        path="/srv/files",
                        debug=False,
                    ),
                    ServiceOptions(
                        section="services/7f1c-ftps",
                        type="ftps",
                        name="files-ftps",
                        address="0.0.0.0",
                        port=21,
                        domains=("ftp.example.com",),
                        path="/srv/ftp",
                        ftps=FTPSOptions(
                            usersFile="/etc/files-server/ftp-users",
                            writable=True,
                            passivePorts=range(50000, 50101),
                        ),
                    ),
                ),
                configurationFile=SAMPLE,
            ),
        )

    def test_defaults(self) -> None:
        """
        Absent options take their defaults: port 80 for the resource and 443
        for services, RSA 2048 keys, Let's Encrypt production, a
        C{lets-encrypt} state folder in the base folder, the section as the
        name, no debugging.
        """
        configuration = parse(resource() + service())
        self.assertEqual(
            configuration,
            Configuration(
                serverName="",
                resource=ResourceOptions(
                    section="resources/r1",
                    name="resources/r1",
                    description="",
                    address="0.0.0.0",
                    port=80,
                    acmeURL=LETS_ENCRYPT_PRODUCTION,
                    stateDirectory=os.path.join(BASE, "lets-encrypt"),
                    storeDirectory=None,
                    redirectURL=None,
                    acmeCAFile=None,
                    keyType="rsa-2048",
                    debug=False,
                    upgradedFromURL=None,
                ),
                services=(
                    ServiceOptions(
                        section="services/s1",
                        type="https",
                        name="services/s1",
                        description="",
                        address="0.0.0.0",
                        port=443,
                        domains=("files.example.com",),
                        path="/srv/files",
                        debug=False,
                    ),
                ),
            ),
        )

    def test_emptyOptionsTakeDefaults(self) -> None:
        """
        An option left empty, as in C{sample.ini}, takes its default.
        """
        configuration = parse(withResource(port="", acme_url="", state_directory="", key_type=""))
        assert configuration.resource is not None
        self.assertEqual(configuration.resource.port, 80)
        self.assertEqual(configuration.resource.acmeURL, LETS_ENCRYPT_PRODUCTION)
        self.assertEqual(configuration.resource.stateDirectory, os.path.join(BASE, "lets-encrypt"))
        self.assertEqual(configuration.resource.keyType, "rsa-2048")

    def test_stateDirectoryBesideFile(self) -> None:
        """
        L{loadConfiguration} puts the default state folder beside the file.
        """
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        path = os.path.join(folder, "server.ini")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(withService(path="files"))
        configuration = loadConfiguration(path)
        assert configuration.resource is not None
        self.assertEqual(
            configuration.resource.stateDirectory, os.path.join(folder, "lets-encrypt")
        )
        self.assertEqual(configuration.services[0].path, os.path.join(folder, "files"))

    def test_relativePaths(self) -> None:
        """
        Relative paths are resolved against the base folder and normalised.
        """
        configuration = parse(
            resource(
                state_directory="state",
                store_directory="../exported/certificates",
                acme_ca_file="./ca/bundle.pem",
            )
            + service(path="files/public/")
        )
        assert configuration.resource is not None
        self.assertEqual(configuration.resource.stateDirectory, "/etc/files-server/state")
        self.assertEqual(configuration.resource.storeDirectory, "/etc/exported/certificates")
        self.assertEqual(configuration.resource.acmeCAFile, "/etc/files-server/ca/bundle.pem")
        self.assertEqual(configuration.services[0].path, "/etc/files-server/files/public")

    def test_absolutePaths(self) -> None:
        """
        Absolute paths are kept, normalised.
        """
        configuration = parse(
            resource(state_directory="/var/lib/acme/", acme_ca_file="/etc/ca.pem")
            + service(path="/srv//files")
        )
        assert configuration.resource is not None
        self.assertEqual(configuration.resource.stateDirectory, "/var/lib/acme")
        self.assertEqual(configuration.resource.acmeCAFile, "/etc/ca.pem")
        self.assertEqual(configuration.services[0].path, "/srv/files")

    def test_homePath(self) -> None:
        """
        A path starting with C{~} is in the user's home folder.
        """
        with mock.patch.dict(os.environ, {"HOME": "/home/files"}):
            configuration = parse(withResource(state_directory="~/acme"))
        assert configuration.resource is not None
        self.assertEqual(configuration.resource.stateDirectory, "/home/files/acme")

    def test_allOptions(self) -> None:
        """
        Every option of the resource and of a service is read.
        """
        configuration = parse(
            "[server]\nname = ftp.example.com\n\n"
            + resource(
                name="acme",
                description="The ACME client",
                enabled="yes",
                address="192.0.2.1",
                port="8080",
                acme_url="https://acme.example.com:14000/dir",
                redirect_url="https://www.example.com/",
                key_type="ECDSA-P384",
                debug="on",
            )
            + service(
                name="downloads",
                description="Public downloads",
                enabled="true",
                address="[2001:DB8::1]",
                port="8443",
                debug="1",
            )
        )
        self.assertEqual(configuration.serverName, "ftp.example.com")
        resourceOptions = configuration.resource
        assert resourceOptions is not None
        self.assertEqual(
            (
                resourceOptions.name,
                resourceOptions.description,
                resourceOptions.address,
                resourceOptions.port,
                resourceOptions.acmeURL,
                resourceOptions.redirectURL,
                resourceOptions.keyType,
                resourceOptions.debug,
            ),
            (
                "acme",
                "The ACME client",
                "192.0.2.1",
                8080,
                "https://acme.example.com:14000/dir",
                "https://www.example.com/",
                "ecdsa-p384",
                True,
            ),
        )
        [serviceOptions] = configuration.services
        self.assertEqual(
            (
                serviceOptions.name,
                serviceOptions.description,
                serviceOptions.address,
                serviceOptions.port,
                serviceOptions.debug,
            ),
            ("downloads", "Public downloads", "2001:db8::1", 8443, True),
        )

    def test_booleans(self) -> None:
        """
        yes, true, on and 1 are true; no, false, off and 0 are false; case
        does not matter.
        """
        for text, expected in (
            ("yes", True),
            ("True", True),
            ("ON", True),
            ("1", True),
            ("no", False),
            ("false", False),
            ("Off", False),
            ("0", False),
        ):
            configuration = parse(withResource(debug=text))
            assert configuration.resource is not None
            self.assertEqual(configuration.resource.debug, expected, text)

    def test_portRange(self) -> None:
        """
        Ports 1 and 65535 are valid.
        """
        for port in (1, 65535):
            configuration = parse(withService(port=str(port)))
            self.assertEqual(configuration.services[0].port, port)

    def test_addresses(self) -> None:
        """
        IP addresses are given in their canonical form, IPv6 ones with or
        without brackets; host names are normalised.
        """
        for written, expected in (
            ("127.0.0.1", "127.0.0.1"),
            ("::", "::"),
            ("[::1]", "::1"),
            ("2001:DB8:0:0::1", "2001:db8::1"),
            ("localhost", "localhost"),
            ("FTP.Example.com", "ftp.example.com"),
            ("bücher.de", "xn--bcher-kva.de"),
        ):
            configuration = parse(withService(address=written))
            self.assertEqual(configuration.services[0].address, expected, written)

    def test_acmeURLHosts(self) -> None:
        """
        An C{acme_url} may name an IP address or a single-label host, as
        test CAs often do.
        """
        for url in (
            "https://127.0.0.1:14000/dir",
            "https://[::1]:14000/dir",
            "https://pebble:14000/dir",
            "https://localhost/directory",
        ):
            configuration = parse(withResource(acme_url=url))
            assert configuration.resource is not None
            self.assertEqual(configuration.resource.acmeURL, url)

    def test_domainsNormalised(self) -> None:
        """
        Names are lower-cased, IDNs turned to their ASCII form, repeats
        dropped and the order kept.
        """
        configuration = parse(
            withService(
                ssl_domains="Files.Example.COM, bücher.de, files.example.com., "
                "xn--bcher-kva.de, www.example.com"
            )
        )
        self.assertEqual(
            configuration.services[0].domains,
            ("files.example.com", "xn--bcher-kva.de", "www.example.com"),
        )

    def test_domainsOnSeveralLines(self) -> None:
        """
        A long C{ssl_domains} may continue on indented lines.
        """
        configuration = parse(withService(ssl_domains="a.example.com,\n  b.example.com"))
        self.assertEqual(configuration.services[0].domains, ("a.example.com", "b.example.com"))

    def test_optionNamesIgnoreCase(self) -> None:
        """
        Option names are not case-sensitive.
        """
        configuration = parse(
            "[resources/r1]\nType = lets-encrypt\nADDRESS = 127.0.0.1\n" + service()
        )
        assert configuration.resource is not None
        self.assertEqual(configuration.resource.address, "127.0.0.1")

    def test_disabledService(self) -> None:
        """
        A service with C{enabled = no} is left out.
        """
        configuration = parse(resource() + service("s1") + service("s2", enabled="no", port="443"))
        self.assertEqual([options.section for options in configuration.services], ["services/s1"])

    def test_disabledResourceWithService(self) -> None:
        """
        A disabled resource cannot get certificates for a service.
        """
        error = self.assertRaises(ConfigurationError, parse, resource(enabled="no") + service())
        self.assertEqual((error.section, error.option), ("services/s1", "ssl_domains"))

    def test_disabledSecondResource(self) -> None:
        """
        A second resource is fine when disabled.
        """
        configuration = parse(resource("r1") + resource("r2", enabled="no") + service())
        assert configuration.resource is not None
        self.assertEqual(configuration.resource.section, "resources/r1")

    def test_disabledFirstResource(self) -> None:
        """
        The enabled resource is used whatever its place in the file.
        """
        configuration = parse(resource("r1", enabled="no") + resource("r2") + service())
        assert configuration.resource is not None
        self.assertEqual(configuration.resource.section, "resources/r2")

    def test_disabledSectionsAreValidated(self) -> None:
        """
        A disabled section must still be valid, so enabling it later cannot
        reveal old mistakes.
        """
        error = self.assertRaises(
            ConfigurationError,
            parse,
            resource() + service(enabled="no", port="none"),
        )
        self.assertEqual((error.section, error.option), ("services/s1", "port"))

    def test_disabledSectionsDoNotClash(self) -> None:
        """
        Only enabled components are checked for listener clashes.
        """
        configuration = parse(resource() + service("s1") + service("s2", enabled="no"))
        self.assertEqual(len(configuration.services), 1)

    def test_resourceWithoutServices(self) -> None:
        """
        A resource alone is valid: host servers may add their own services.
        """
        configuration = parse(resource())
        self.assertEqual(configuration.services, ())
        self.assertIsNot(configuration.resource, None)

    def test_commentsAndBlankLines(self) -> None:
        """
        Whole-line comments and blank lines are ignored.
        """
        configuration = parse("# A comment\n\n; another\n" + resource() + "# between\n" + service())
        self.assertEqual(len(configuration.services), 1)

    def test_separateLoopbackListeners(self) -> None:
        """
        Distinct loopback addresses, of either family, may share a port: each
        binds its own socket.
        """
        configuration = parse(
            resource(address="127.0.0.1")
            + service("s1", address="127.0.0.1")
            + service("s2", address="::1")
            + service("s3", address="127.0.0.2")
            + service("s4", address="localhost", port="8443")
        )
        self.assertEqual(len(configuration.services), 4)

    def test_sharedTextsParsedOnce(self) -> None:
        """
        A text that many sections share is parsed once for all of them:
        services that all listen on one address ask C{ipaddress} about it
        as often whether they are 10 or 100.
        """
        calls: list[str] = []
        real = ipaddress.ip_address

        def counted(text: str) -> object:
            calls.append(text)
            return real(text)

        self.patch(ipaddress, "ip_address", counted)

        def parsed(n: int) -> int:
            del calls[:]
            text = resource() + "".join(
                service(f"s{i}", port=str(20000 + i), ssl_domains=f"s{i}.example.com")
                for i in range(n)
            )
            self.assertEqual(len(parse(text).services), n)
            return calls.count("0.0.0.0")

        self.assertEqual((parsed(10), parsed(100)), (1, 1))

    def test_listenerCheckIsLinear(self) -> None:
        """
        The listener check compares each listener with what the ones before
        it bound, by port and address, not with every other listener: for
        N services on one port, all on distinct addresses, it compares or
        hashes addresses a fixed number of times per service (comparing
        every pair would be N * (N - 1) / 2 comparisons), and still finds
        the clash of a last one on an address already used.
        """
        counts = {"compared": 0}

        class CountedAddress(str):
            """
            An address that counts its comparisons and hashes.
            """

            def __eq__(self, other: object) -> bool:
                counts["compared"] += 1
                return str.__eq__(self, other)

            def __lt__(self, other: str) -> bool:
                counts["compared"] += 1
                return str.__lt__(self, other)

            def __hash__(self) -> int:
                counts["compared"] += 1
                return str.__hash__(self)

        def listener(index: int, address: str) -> ServiceOptions:
            return ServiceOptions(
                section=f"services/s{index}",
                type="https",
                name=f"s{index}",
                address=CountedAddress(address),
                port=443,
                domains=("files.example.com",),
                path="/srv/files",
            )

        n = 2000
        services = [listener(i, f"10.0.{i // 250}.{i % 250}") for i in range(n)]
        checkComponents(Configuration("", None, tuple(services), None))
        # Each address is hashed and compared a few times: looked up and
        # kept among the addresses worked out, and among those bound.
        self.assertLessEqual(counts["compared"], 6 * n)
        clashing = Configuration("", None, (*services, listener(n, "10.0.3.7")), None)
        error = self.assertRaises(ConfigurationError, checkComponents, clashing)
        self.assertEqual(
            str(error),
            f"[services/s{n}] option 'port': 10.0.3.7 port 443 is already used by [services/s757]",
        )

    def test_differentListeners(self) -> None:
        """
        Services may share a port on different addresses, or an address on
        different ports.
        """
        configuration = parse(
            resource(address="192.0.2.1")
            + service("s1", address="192.0.2.1")
            + service("s2", address="192.0.2.2")
            + service("s3", address="192.0.2.1", port="8443")
        )
        self.assertEqual(len(configuration.services), 3)

    def test_sharedDomains(self) -> None:
        """
        Services may carry the same names; they share a certificate.
        """
        configuration = parse(resource() + service("s1") + service("s2", port="8443"))
        self.assertEqual(
            [options.domains for options in configuration.services],
            [("files.example.com",), ("files.example.com",)],
        )

    def test_utf8BOM(self) -> None:
        """
        A UTF-8 file starting with a byte order mark, as some Windows
        editors write, is read.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8-sig") as stream:
            stream.write("[server]\nname = café\n" + resource())
        self.assertEqual(loadConfiguration(path).serverName, "café")

    def test_hiddenFiles(self) -> None:
        """
        C{hidden_files} of an C{https} service is a boolean, C{no} by
        default.
        """
        for value, expected in [(None, False), ("no", False), ("yes", True)]:
            options = {} if value is None else {"hidden_files": value}
            [parsed] = parse(resource() + service(**options)).services
            self.assertIs(parsed.hiddenFiles, expected, value)
        error = self.assertRaises(
            ConfigurationError, parse, resource() + service(hidden_files="some")
        )
        self.assertEqual(error.option, "hidden_files")

    def test_frozen(self) -> None:
        """
        The parsed options cannot be changed.
        """
        configuration = parse(resource())
        assert configuration.resource is not None
        self.assertRaises(AttributeError, setattr, configuration.resource, "port", 8080)


class ACMEv1UpgradeTests(SynchronousTestCase):
    """
    The retired ACMEv1 Let's Encrypt directories are upgraded to ACMEv2.
    """

    def assertUpgraded(self, written: str, expected: str) -> None:
        """
        Assert the C{acme_url} C{written} becomes C{expected} and is kept as
        C{upgradedFromURL}.
        """
        configuration = parse(resource(acme_url=written))
        assert configuration.resource is not None
        self.assertEqual(
            (configuration.resource.acmeURL, configuration.resource.upgradedFromURL),
            (expected, written),
        )

    def test_production(self) -> None:
        """
        The ACMEv1 production directory becomes the ACMEv2 one.
        """
        self.assertUpgraded(
            "https://acme-v01.api.letsencrypt.org/directory", LETS_ENCRYPT_PRODUCTION
        )

    def test_staging(self) -> None:
        """
        The ACMEv1 staging directory becomes the ACMEv2 one.
        """
        self.assertUpgraded(
            "https://acme-staging.api.letsencrypt.org/directory", LETS_ENCRYPT_STAGING
        )

    def test_trailingSlash(self) -> None:
        """
        A trailing slash does not prevent the upgrade.
        """
        self.assertUpgraded(
            "https://acme-v01.api.letsencrypt.org/directory/", LETS_ENCRYPT_PRODUCTION
        )

    def test_otherURLsKept(self) -> None:
        """
        ACMEv2 and other URLs are kept, with no C{upgradedFromURL}.
        """
        for url in (
            LETS_ENCRYPT_PRODUCTION,
            LETS_ENCRYPT_STAGING,
            "https://acme.example.com/directory",
        ):
            configuration = parse(resource(acme_url=url))
            assert configuration.resource is not None
            self.assertEqual(
                (
                    configuration.resource.acmeURL,
                    configuration.resource.upgradedFromURL,
                ),
                (url, None),
            )


#: Where most corpus problems are.
R1 = "resources/r1"
S1 = "services/s1"
HUNDRED_AND_ONE = ",".join(f"n{index}.example.com" for index in range(101))

#: Malformed configurations, each with exactly one problem: (description,
#: INI text or file bytes, section at fault, option at fault).  Bytes are
#: written to a file and read by loadConfiguration.
MALFORMED = (
    # Types.
    ("unknown resource type", withResource(type="acme"), R1, "type"),
    ("resource without type", withResource(type=None), R1, "type"),
    ("resource of a service type", withResource(type="https"), R1, "type"),
    ("unknown service type", withService(type="ftp"), S1, "type"),
    ("service of resource type", withService(type="lets-encrypt"), S1, "type"),
    ("empty service type", withService(type=""), S1, "type"),
    ("service type in capitals", withService(type="HTTPS"), S1, "type"),
    # Ranges.
    ("port not a number", withResource(port="http"), R1, "port"),
    ("port 0", withResource(port="0"), R1, "port"),
    ("port 65536", withService(port="65536"), S1, "port"),
    ("negative port", withService(port="-443"), S1, "port"),
    ("port with a sign", withService(port="+443"), S1, "port"),
    ("port with an underscore", withService(port="4_43"), S1, "port"),
    ("fractional port", withService(port="443.0"), S1, "port"),
    ("port in full-width digits", withService(port="４４３"), S1, "port"),
    ("port with a comment", withService(port="443 # https"), S1, "port"),
    # Addresses.
    ("IPv4 out of range", withService(address="300.1.2.3"), S1, "address"),
    ("address with a port", withService(address="0.0.0.0:443"), S1, "address"),
    ("star address", withResource(address="*"), R1, "address"),
    ("empty label", withService(address="ftp..example.com"), S1, "address"),
    ("empty address", withResource(address=""), R1, "address"),
    ("missing service address", withService(address=None), S1, "address"),
    # URLs.
    ("ftp URL", withResource(acme_url="ftp://ca.example/d"), R1, "acme_url"),
    ("plain http ACME", withResource(acme_url="http://ca.example/d"), R1, "acme_url"),
    ("URL without host", withResource(acme_url="https:///d"), R1, "acme_url"),
    ("URL without scheme", withResource(acme_url="ca.example/d"), R1, "acme_url"),
    ("URL port 0", withResource(acme_url="https://ca.example:0/"), R1, "acme_url"),
    ("empty URL port", withResource(acme_url="https://ca.example:/"), R1, "acme_url"),
    ("space in host", withResource(acme_url="https://c a.example/"), R1, "acme_url"),
    ("_ in URL host", withResource(acme_url="https://c_a.example/"), R1, "acme_url"),
    ("mail redirect", withResource(redirect_url="mailto:a@b.c"), R1, "redirect_url"),
    ("redirect without host", withResource(redirect_url="http://"), R1, "redirect_url"),
    (
        "redirect on two lines",
        withResource(redirect_url="https://a.example/\n x"),
        R1,
        "redirect_url",
    ),
    # Domains.
    ("empty domain label", withService(ssl_domains="a..b.com"), S1, "ssl_domains"),
    ("wildcard domain", withService(ssl_domains="*.example.com"), S1, "ssl_domains"),
    ("IP address as domain", withService(ssl_domains="192.0.2.1"), S1, "ssl_domains"),
    ("single-label domain", withService(ssl_domains="localhost"), S1, "ssl_domains"),
    ("numeric TLD", withService(ssl_domains="a.example.123"), S1, "ssl_domains"),
    ("64-char label", withService(ssl_domains="a" * 64 + ".com"), S1, "ssl_domains"),
    ("empty domain entry", withService(ssl_domains="a.com,,b.com"), S1, "ssl_domains"),
    ("trailing comma", withService(ssl_domains="a.com,"), S1, "ssl_domains"),
    ("space-separated", withService(ssl_domains="a.com b.com"), S1, "ssl_domains"),
    ("101 names", withService(ssl_domains=HUNDRED_AND_ONE), S1, "ssl_domains"),
    ("invalid IDN", withService(ssl_domains="bad\u200d.com"), S1, "ssl_domains"),
    ("invalid A-label", withService(ssl_domains="xn--zz.a.test"), S1, "ssl_domains"),
    ("reserved label", withService(ssl_domains="ab--c.a.test"), S1, "ssl_domains"),
    ("empty ssl_domains", withService(ssl_domains=""), S1, "ssl_domains"),
    # Paths.
    ("missing path", withService(path=None), S1, "path"),
    ("empty path", withService(path=""), S1, "path"),
    ("NUL in path", withService(path="/srv/\0files"), S1, "path"),
    ("NUL in state", withResource(state_directory="st\0te"), R1, "state_directory"),
    ("NUL in CA file", withResource(acme_ca_file="ca\0.pem"), R1, "acme_ca_file"),
    # Booleans and choices.
    ("enabled = maybe", withService(enabled="maybe"), S1, "enabled"),
    ("debug = 2", withResource(debug="2"), R1, "debug"),
    ("unknown key type", withResource(key_type="dsa-1024"), R1, "key_type"),
    ("RSA key too small", withResource(key_type="rsa-1024"), R1, "key_type"),
    # Options and sections.
    ("unknown option", withResource(domains="a.com"), R1, "domains"),
    ("unknown server option", "[server]\naddress = ::\n", "server", "address"),
    ("duplicate section", withService() + service(port="8443"), S1, None),
    ("duplicate [server]", "[server]\n[server]\n", "server", None),
    ("duplicate option", "[resources/r1]\nport = 1\nPort = 2\n", R1, "port"),
    ("unknown section kind", "[listeners/l1]\n", "listeners/l1", None),
    ("DEFAULT section", "[DEFAULT]\nport = 80\n", "DEFAULT", None),
    ("section in capitals", "[Resources/r1]\n", "Resources/r1", None),
    ("kind without id", "[resources]\n", "resources", None),
    ("empty section id", resource() + service(""), "services/", None),
    ("pipe in section id", resource() + service("s|1"), "services/s|1", None),
    ("slash in section id", resource() + service("s/1"), "services/s/1", None),
    ("space before id", resource() + service(" s1"), "services/ s1", None),
    # File structure and encodings.
    ("option before any section", "port = 80\n" + withService(), None, None),
    ("line without a value", withService() + "[server]\nname\n", None, None),
    ("Latin-1 file", "[server]\nname = café\n".encode("latin-1"), None, None),
    ("UTF-16 file", withService().encode("utf-16"), None, None),
    ("stray byte", b"[server]\nname = \xff\n", None, None),
    # The configuration as a whole.
    ("two resources", resource() + resource("r2", port="81"), "resources/r2", "type"),
    ("service alone", service(), S1, "ssl_domains"),
    ("disabled resource", resource(enabled="no") + service(), S1, "ssl_domains"),
    ("one listener", resource() + service("s1") + service("s2"), "services/s2", "port"),
    ("resource's listener", withService(port="80"), S1, "port"),
    ("IPv6 and IPv4 wildcards", withService(address="::", port="80"), S1, "port"),
    (
        "localhost and 127.0.0.1",
        resource() + service("s1", address="localhost") + service("s2", address="::1"),
        "services/s2",
        "port",
    ),
    ("empty file", "", None, None),
    ("lone [server]", "[server]\nname = a\n", None, None),
    ("everything disabled", resource(enabled="no"), None, None),
)


class MalformedCorpusTests(SynchronousTestCase):
    """
    A corpus of malformed configurations, each refused with one
    L{ConfigurationError} pointing at its problem.
    """

    def check(self, text: str | bytes) -> ConfigurationError | None:
        """
        Parse C{text}, or load it from a file when it is bytes, and return
        the error.
        """
        try:
            if isinstance(text, bytes):
                path = self.mktemp()
                with open(path, "wb") as stream:
                    stream.write(text)
                loadConfiguration(path)
            else:
                parse(text)
        except ConfigurationError as error:
            return error
        return None

    def test_corpusIsDistinct(self) -> None:
        """
        The corpus holds at least 40 distinct configurations and
        descriptions.
        """
        self.assertGreaterEqual(len(MALFORMED), 40)
        self.assertEqual(len({row[0] for row in MALFORMED}), len(MALFORMED))
        self.assertEqual(len({row[1] for row in MALFORMED}), len(MALFORMED))

    def test_helpersAreValid(self) -> None:
        """
        Without changes, the sections the corpus is built from are valid, so
        each entry holds only the problem it describes.
        """
        configuration = parse(withService())
        self.assertIsNot(configuration.resource, None)
        self.assertEqual(len(configuration.services), 1)

    def test_corpus(self) -> None:
        """
        Each malformed configuration raises L{ConfigurationError} at the
        expected section and option, and its text names them: the section
        in brackets, the option in quotes.
        """
        failures = []
        for description, text, section, option in MALFORMED:
            error = self.check(text)
            if error is None:
                failures.append(f"{description}: accepted")
                continue
            rendered = str(error)
            if (error.section, error.option) != (section, option):
                failures.append(
                    f"{description}: at ({error.section!r}, {error.option!r}), "
                    f"not ({section!r}, {option!r}): {rendered}"
                )
            if section is not None and not rendered.startswith(f"[{section}]"):
                failures.append(f"{description}: {rendered!r} lacks [{section}]")
            if option is not None and f"option '{option}'" not in rendered:
                failures.append(f"{description}: {rendered!r} lacks '{option}'")
            if section is None and option is None and rendered != error.message:
                failures.append(f"{description}: {rendered!r} is not the bare message")
            if not error.message:
                failures.append(f"{description}: the message is empty")
        self.assertEqual(failures, [])


class OptionsInCodeTests(SynchronousTestCase):
    """
    L{ResourceOptions} and L{ServiceOptions} built in code: each field is
    declared once, with its option, so code and file agree on defaults.
    """

    def test_resourceDefaultsAsInTheFile(self) -> None:
        """
        Options built from only a section, a state directory and an address
        equal those the file gives for a section setting only these.
        """
        parsed = parse(resource(state_directory="/var/lib/le")).resource
        built = ResourceOptions(
            section="resources/r1", stateDirectory="/var/lib/le", address="0.0.0.0"
        )
        self.assertEqual(built, parsed)

    def test_serviceDefaultsAsInTheFile(self) -> None:
        """
        A service built from its required options equals the one the file
        gives for a section setting only these.
        """
        [parsed] = parse(resource() + service()).services
        built = ServiceOptions(
            section="services/s1",
            type="https",
            address="0.0.0.0",
            domains=("files.example.com",),
            path="/srv/files",
        )
        self.assertEqual(built, parsed)

    def test_stateDirectoryNeeded(self) -> None:
        """
        Built in code, the options need a state directory: there is no
        configuration file for the default folder to sit beside.
        """
        self.assertRaises(TypeError, ResourceOptions, section="resources/r1", address="0.0.0.0")

    def test_challengeSiteNeedsAListener(self) -> None:
        """
        As in the file, a challenge site needs an address or an endpoint:
        built without either, it would listen on every interface.
        """
        error = self.assertRaises(
            ValueError, ResourceOptions, section="resources/r1", stateDirectory="/s"
        )
        self.assertIn("address or an endpoint", str(error))
        self.assertEqual(
            ResourceOptions(section="resources/r1", stateDirectory="/s", endpoint="tcp:80").address,
            "",
        )
        self.assertFalse(
            ResourceOptions(
                section="resources/r1", stateDirectory="/s", challengeSite=False
            ).challengeSite
        )

    def test_tablesFromTheFields(self) -> None:
        """
        The option tables hold the option of each field that one sets, once,
        beside those that choose the component.
        """
        for cls, table, choosing in (
            (ResourceOptions, RESOURCE_OPTIONS, {"type", "enabled"}),
            (ServiceOptions, SERVICE_OPTIONS, {"enabled"}),
            (FTPSOptions, FTPS_OPTIONS, set()),
        ):
            names = [option.name for option in table]
            self.assertEqual(len(names), len(set(names)), cls)
            fromFields = {
                optionName(field)
                for field in attrs.fields(cls)
                if field.name not in ("section", "upgradedFromURL", "ftps")
            }
            self.assertEqual(set(names), fromFields | choosing, cls)


class SharedWorkTests(SynchronousTestCase):
    """
    What reading many service sections does once, not once for each.
    """

    def test_optionsNotHashed(self) -> None:
        """
        Reading service sections does not hash their options, once per
        option and section (hashing the tuple of them was 9 us a section).
        """
        parse(resource() + service("s1"))
        hashed: list[Option] = []
        original = Option.__hash__

        def counting(option: Option) -> int:
            hashed.append(option)
            return original(option)

        self.patch(Option, "__hash__", counting)
        parse(resource() + "".join(service(f"s{i}", port=str(8000 + i)) for i in range(3)))
        self.assertEqual(hashed, [])

    def test_oneTupleOfOptionsForEachType(self) -> None:
        """
        Each service type's options are one tuple, whatever the sections
        of that type: what is made once for each tuple is made once for
        each type.
        """
        for kind in ("https", "ftps"):
            self.assertIs(_serviceOptions(kind), _serviceOptions(kind))
        self.assertEqual(_serviceOptions("ftps"), SERVICE_OPTIONS + FTPS_OPTIONS)

    def test_sharedAddressWorkedOutOnce(self) -> None:
        """
        What an address binds is worked out once, however many listeners
        use it: 10,000 services may listen on one.
        """
        addresses: list[str] = []
        original = config._bindings

        def counting(address: str) -> frozenset[str]:
            addresses.append(address)
            return original(address)

        self.patch(config, "_bindings", counting)
        parse(resource() + "".join(service(f"s{i}", port=str(8000 + i)) for i in range(3)))
        self.assertEqual(sorted(addresses), ["0.0.0.0"])

    def test_portPatternCompiledOnce(self) -> None:
        """
        A port is checked with a pattern compiled once, not looked up in
        C{re}'s cache at each service; what is a port is unchanged.
        """
        with mock.patch("re._compile", side_effect=AssertionError("compiled")):
            self.assertEqual(config._port(" 443 "), 443)
            self.assertRaises(ValueError, config._port, "44a")
            self.assertRaises(ValueError, config._port, "\u0664\u0664\u0663")
            self.assertRaises(ValueError, config._port, "0")
            self.assertRaises(ValueError, config._port, "65536")

    def test_writtenOptionsOnlyWhereNeeded(self) -> None:
        """
        Which options a section sets is worked out only for a section
        whose checks ask (an endpoint beside an address or port, an ftps
        service's defaults), not for each https service on an address:
        10,000 of them paid for it at each start.
        """
        worked: list[dict[str, str]] = []
        original = config._written

        def counting(read: dict[str, str]) -> set[str]:
            worked.append(read)
            return original(read)

        self.patch(config, "_written", counting)
        parse(resource() + "".join(service(f"s{i}", port=str(8000 + i)) for i in range(3)))
        self.assertEqual(worked, [])
        self.assertRaises(
            ConfigurationError,
            parse,
            resource() + service("s1", endpoint="tcp:8443", address="127.0.0.1"),
        )
        self.assertEqual(len(worked), 1)
