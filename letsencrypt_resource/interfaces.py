"""
The interfaces between the resource and the services it serves.

A host server builds a C{zope.interface.registry.Components} registry and
registers each of its TLS services there as an L{ICertificateConsumer}
utility (one name per service).  The resource finds them there, obtains one
certificate per distinct domain set and hands it to every consumer of that
set.
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


class ICertificateStore(Interface):
    """
    Durable storage for the account key and the certificates.

    Every method raises L{letsencrypt_resource.store.StoreError} when the
    storage cannot be read or written; the resource reports it and tries
    again later.
    """

    def loadAccount(acmeURL):
        """
        Return the stored L{letsencrypt_resource.store.AccountRecord} for
        the ACME directory C{acmeURL}, or C{None}.
        """

    def saveAccount(acmeURL, record):
        """
        Store C{record} as the account for C{acmeURL}, atomically.
        """

    def loadCertificate(domains):
        """
        Return the stored L{letsencrypt_resource.certificates.CertifiedKey}
        for the domain tuple C{domains}, or C{None}.
        """

    def saveCertificate(domains, certifiedKey):
        """
        Store C{certifiedKey} for C{domains}, its key and its chain
        together, atomically.

        @return: The path it was stored at, for events.
        """

    def checkCertificateWritable(domains):
        """
        Check that a certificate for the domain tuple C{domains}, and its
        renewal state, can be stored now, before one is ordered: an order
        whose result cannot be stored spends the CA's limits for nothing.

        @raise letsencrypt_resource.store.StoreError: when they cannot.
        """

    def loadRenewalState(domains):
        """
        Return the renewal state saved for C{domains} (a JSON-ready dict),
        or C{None}.
        """

    def saveRenewalState(domains, state):
        """
        Save the renewal state C{state} for C{domains}, atomically.
        """

    def loadProvisionalSigner():
        """
        Return the PEM bytes of this installation's provisional signing key
        and certificate, or C{None} when there is none yet.
        """

    def saveProvisionalSigner(pem):
        """
        Store this installation's provisional signing key and certificate.
        """
