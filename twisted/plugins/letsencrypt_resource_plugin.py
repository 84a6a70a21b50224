from typing import Any

from twisted.application.service import ServiceMaker


class _PausingServiceMaker(ServiceMaker):
    """
    The plugin of C{twistd lets-encrypt}.  twistd asks a plugin for its
    options only to run it: from then, before the server's modules are
    imported, automatic garbage collection pauses (a tenth of a second of
    collections at their import otherwise) until the server has started,
    or its options are refused (see C{letsencrypt_resource.startupcollection}).
    """

    @property
    def options(self) -> Any:
        from letsencrypt_resource.startupcollection import pauseCollection

        pauseCollection()
        return super().options


letsEncrypt = _PausingServiceMaker(
    "lets-encrypt",
    "letsencrypt_resource.tap",
    "File services with automatic ACME (Let's Encrypt) certificates.",
    "lets-encrypt",
)
