"""
L{StateDirectory}: the records of a state directory, read and written at
once in the test's thread, for tests that prepare what a resource finds on
disk or look at what it left there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock

from letsencrypt_resource.storage.checks import checkCertificateWritable
from letsencrypt_resource.storage.directory import DirectoryStorage, InThisThread
from letsencrypt_resource.storage.records import Records
from letsencrypt_resource.testing.fakes import fired


class StateDirectory:
    """
    The records of a state directory, read and written at once: every
    method of L{Records} is offered here, answering at once
    (C{state.loadRenewalState(domains)}), run over a L{DirectoryStorage}
    whose file operations run in the test's thread, opened for the call
    and closed after it.  A failure is raised: a L{StorageError
    <letsencrypt_resource.storage.interface.StorageError>} naming the file.

    @ivar path: The state directory.
    @ivar exportDirectory: The store directory, if any, that
        L{checkCertificateWritable} checks too.
    """

    def __init__(self, path: str, exportDirectory: str | None = None):
        self.path = path
        self.exportDirectory = exportDirectory

    def checkCertificateWritable(self, domains: tuple[str, ...]) -> None:
        """
        The resource's check, before an order, that the certificate of
        C{domains} can be stored (see L{checkCertificateWritable}).
        """
        checkCertificateWritable(self.path, self.exportDirectory, domains)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """
        The method C{name} of L{Records}, answering at once.
        """
        if name.startswith("_") or not hasattr(Records, name):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            storage = DirectoryStorage(self.path, Clock(), workers=InThisThread())
            try:
                return fired(getattr(Records(storage), name)(*args, **kwargs))
            finally:
                fired(storage.close())

        return call
