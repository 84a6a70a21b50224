from collections.abc import Callable
from typing import Any

from twisted.application.service import ServiceMaker


class _PausingServiceMaker(ServiceMaker):
    """
    The plugin of C{twistd lets-encrypt}.  Its options are made by a call
    (twistd and C{twist} call it just before parsing them), which imports
    the server's modules with automatic garbage collection paused, and
    resumes it before it returns, whatever happens: one young collection
    follows the import instead of about 75 during it (0.035 s of CPU instead
    of 0.06-0.1 s), and it frees the import's leftover cycles.  Parsing the
    options pauses collection again until the server has started (see
    C{letsencrypt_resource.startupcollection}).  Reading the attribute
    imports and pauses nothing.
    """

    @property
    def options(self) -> Callable[[], Any]:
        return self._makeOptions

    def _makeOptions(self) -> Any:
        from letsencrypt_resource.startupcollection import pausedCollection

        with pausedCollection():
            options = super().options
        return options()


letsEncrypt = _PausingServiceMaker(
    "lets-encrypt",
    "letsencrypt_resource.tap",
    "File services with automatic ACME (Let's Encrypt) certificates.",
    "lets-encrypt",
)
