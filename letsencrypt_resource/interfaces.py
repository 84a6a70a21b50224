"""
The interfaces between the resource and the services it serves.

A host server builds a C{zope.interface.registry.Components} registry and
registers each of its TLS services there as an L{ICertificateConsumer}
utility (one name per service).  The resource finds them there, obtains one
certificate per distinct domain set and hands it to every consumer of that
set.  Where the resource keeps its state is
L{letsencrypt_resource.storage.interface.IStorage}.
"""

from zope.interface import Attribute, Interface


class ICertificateConsumer(Interface):
    """
    A TLS service that takes its certificate from the resource.
    """

    name = Attribute("The service's label, as shown in events.")
    domains = Attribute(
        "A tuple of lower-case ASCII domain names; the first is the subject. "
        "Use letsencrypt_resource.domains.parseDomainList to build it."
    )

    def useCertificate(certifiedKey):
        """
        Switch to C{certifiedKey} for new TLS handshakes, in place.

        Open connections keep the certificate they started with.  Called
        once with a provisional certificate when no CA-issued one is stored
        yet, then with each CA-issued certificate.

        @type certifiedKey: L{letsencrypt_resource.certificates.CertifiedKey}
        """


class IReportsUnusableCertificates(Interface):
    """
    A consumer that can say when a certificate it was given turns out,
    at its first use, to be unusable: its key, read only then (see
    L{letsencrypt_resource.certificates.CertifiedKey.fromCheckedPEM}),
    cannot be read or does not match, and it has no earlier certificate
    to present instead.  Optional: consumers without it are not asked.
    """

    def reportUnusableTo(callback):
        """
        From now on, call C{callback(domains, certifiedKey)} (C{domains}
        its own, C{certifiedKey} the certificate it cannot present) once
        for each such certificate.
        """
