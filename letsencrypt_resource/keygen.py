"""
Key generation as the service runs it: in a worker thread, at a low CPU
priority (see L{letsencrypt_resource.workers}).

L{letsencrypt_resource.keys} makes keys and knows no threads; this module
marks its generation for the workers, so that the key helpers stay below
the thread code in the package's layers.
"""

from __future__ import annotations

from . import keys
from .workers import lowPriority


@lowPriority
def generateKey(keyType: str) -> keys.PrivateKey:
    """
    L{keys.generateKey}, marked for the low-priority workers: long, and
    free of the GIL.
    """
    return keys.generateKey(keyType)
