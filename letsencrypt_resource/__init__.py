"""
Automatic ACME (Let's Encrypt) certificates for Twisted servers: see
L{letsencrypt_resource.resource.LetsEncryptResource}, and the embedding
page of the documentation for the parts a host server uses.
"""

#: The version of the package, which the documentation shows too.
__version__ = "0.1.0"
