import gc
from collections.abc import Callable
from typing import Any

from twisted.application.service import ServiceMaker


class _PausingServiceMaker(ServiceMaker):
    """
    The plugin of C{twistd lets-encrypt}.  Its options are made by a call
    (twistd and C{twist} call it just before parsing them), which imports
    the server's modules with automatic garbage collection paused, freezes
    what the import made, and resumes it before it returns, whatever
    happens: no collection goes over the import's objects (about 75 did
    during it, 0.06-0.1 s of CPU; a young collection after it, 0.04 s).
    Parsing the
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
            # What the import made lives as long as the process.
            gc.freeze()
        return options()


letsEncrypt = _PausingServiceMaker(
    "lets-encrypt",
    "letsencrypt_resource.tap",
    "File services with automatic ACME (Let's Encrypt) certificates.",
    "lets-encrypt",
)
