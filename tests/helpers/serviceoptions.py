"""
The options of an C{https} service, for the tests of the file service.
"""

from __future__ import annotations

from letsencrypt_resource.config import ServiceOptions

ADDRESS = "127.0.0.1"


PORT = 8443


def makeOptions(path: str) -> ServiceOptions:
    """
    Options of an C{https} service serving C{path} on L{ADDRESS}:L{PORT}.
    """
    return ServiceOptions(
        section="files",
        type="https",
        name="files",
        description="Test files",
        address=ADDRESS,
        port=PORT,
        domains=("example.com",),
        path=path,
        debug=False,
    )
