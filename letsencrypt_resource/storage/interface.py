"""
The storage contract: keys to bytes, leases with fencing tokens, and
change notification, every call answered by a Deferred, so that a store
on a database implements it as well as one on the file system.

A key is a relative path of C{/}-separated parts, such as
C{accounts/<id>.json}, C{certificates/<set>.pem} or C{challenges/<token>}
(L{checkKey} gives the rule).  A key may not be both a value and a folder
of other keys: while C{a} holds a value, C{a/b} is refused, and while
C{a/b} holds one, C{a} is.  Every store accepts, and refuses, the same
keys, so that what works on one works on all.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

#: Names a key may not start with: the state directory keeps its lock and
#: control socket there.
RESERVED = frozenset({"lock", "control.sock"})
#: The longest part of a key, in bytes: a file name.
MAX_PART = 255
#: The largest value read, in bytes: a key with its chain, or a renewal
#: state, is a few kilobytes.  A larger file or row is refused with
#: L{TOO_LARGE} without being read whole, as a damaged record.
MAX_VALUE = 1 << 20
#: Why a value over L{MAX_VALUE} is refused.
TOO_LARGE = f"is larger than {MAX_VALUE} bytes, the most a record is read of"


class StorageError(Exception):
    """
    A key cannot be read or written.

    @ivar key: The key concerned (or the lease's name).
    @ivar message: Why.
    """

    def __init__(self, key: str, message: str):
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ValueTooLarge(StorageError):
    """
    The value at a key is larger than L{MAX_VALUE} bytes and was left
    unread: a damaged record (L{TOO_LARGE}).  C{load} fails with it;
    C{loadMany} gives it as that key's value, the others read.
    """

    def __init__(self, key: str):
        super().__init__(key, TOO_LARGE)


class StorageUnavailable(StorageError):
    """
    The place cannot be reached now (a database down, cut off, or refusing
    connections): the same call may succeed later.
    """


class StaleFence(StorageError):
    """
    A write was made under a lease that another holder has taken since: its
    fencing token is older than the newest one of that lease.

    @ivar token: The write's fencing token.
    @ivar newest: The lease's newest token.
    """

    def __init__(self, key: str, lease: str, token: int, newest: int):
        super().__init__(
            key,
            f"refused: lease {lease} token {token} is older than its newest, {newest}",
        )
        self.token = token
        self.newest = newest


class LeaseLost(StorageError):
    """
    A lease cannot be renewed: another holder took it, or its store was
    closed.
    """


def checkKey(key: str) -> str:
    """
    Check that C{key} names a stored value: non-empty parts joined by C{/},
    none starting with C{.} (so no C{.}, C{..} or hidden file), none
    holding a NUL byte or longer than L{MAX_PART} bytes, and the first not
    one of L{RESERVED}; a part may hold bytes that are not UTF-8 (as
    C{os.fsdecode} gives them), but no other unpaired surrogate.

    @return: C{key}.
    @raise StorageError: when it does not.
    """
    parts = key.split("/") if isinstance(key, str) else [""]
    for part in parts:
        if not part or part.startswith(".") or "\0" in part:
            raise StorageError(repr(key), "is not a valid key")
        try:
            size = len(part.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            raise StorageError(repr(key), "is not a valid key") from None
        if size > MAX_PART:
            raise StorageError(repr(key), f"has a part longer than {MAX_PART} bytes")
    if parts[0] in RESERVED:
        raise StorageError(key, "is reserved")
    return key


def checkValue(key: str, value: object) -> bytes:
    """
    Check that C{value}, to be stored at C{key}, is bytes (C{bytes},
    C{bytearray} or C{memoryview}) of no more than L{MAX_VALUE}: what is
    written can always be read back.

    @return: C{value} as C{bytes}.
    @raise StorageError: when it is not.
    """
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise StorageError(key, f"the value is {type(value).__name__}, not bytes")
    data = bytes(value)
    if len(data) > MAX_VALUE:
        raise StorageError(key, f"the value {TOO_LARGE}: not stored")
    return data


def checkPrefix(prefix: str) -> str:
    """
    Check that C{prefix} can start a key: empty, or a key, or a key and a
    trailing C{/}.

    @return: C{prefix}.
    @raise StorageError: when it cannot.
    """
    if prefix:
        checkKey(prefix.removesuffix("/"))
    return prefix


class ILease(Interface):
    """
    The exclusive right, for a time, to do the work a name stands for (such
    as ordering a domain set's certificate), as one holder among the
    storage's users.  Writes made for that work pass the lease as their
    C{fence}: once another holder has taken the lease, they are refused.
    """

    name = Attribute("The lease's name: a key (see checkKey).")
    token = Attribute(
        "The fencing token, an int: larger than that of every earlier "
        "holder of this name, across restarts."
    )

    def renew():
        """
        Keep the lease, from now, for as many seconds as it was taken for.

        @return: A Deferred that fires with C{None}, or fails with
            L{LeaseLost} when the lease is no longer this holder's.
        """

    def release():
        """
        Give the lease up, so that another holder can take it at once.

        @return: A Deferred that fires with C{None} (also when it was
            released or lost already).
        """


class IStorage(Interface):
    """
    Durable key-value storage shared by every user of the same place (the
    same state directory, the same database): what one writes, the others
    read.

    Every method returns a Deferred that fires in the reactor thread; a
    failure is a L{StorageError} naming the key.  A store guarantees:

      - B{atomicity}: a value read is one that was stored in full, never
        a part, nor a mix of two writes;
      - B{durability}: once C{store} or C{delete} has fired, the change
        survives a crash of the process or the machine;
      - B{keys}: every store refuses the same keys (L{checkKey}, and no
        key both a value and a folder of others: C{store}, C{load} and
        C{delete} of C{a/b} while C{a} holds a value, or of C{a} while
        C{a/b} does, fail) and the same values (only bytes);
      - B{leases}: a lease is exclusive among every storage object on the
        place (other nodes, other objects in the same process, other
        callers of the same object); one that expired can be taken by any
        of them.  A store where the place is a process's own (the state
        directory) may hold every lease of the place for that process as
        long as it runs: another process then gets none, expired or not,
        until the holding process closes its storage objects or exits;
      - B{fencing}: a write with a C{fence} is checked against the newest
        token of that lease as one step with the write itself, and
        refused with L{StaleFence} when it is older (or with L{LeaseLost}
        when the store can no longer tell: the state directory's lock was
        lost);
      - B{notification}: every change made through another storage object
        (another process, another node) on the same place is reported to
        C{watch} callbacks whose prefix it starts with, after it can be
        read.
    """

    exclusive = Attribute(
        """
        Whether this process is the only user of the place while the
        storage is open (the state directory, under its lock): then nothing
        is published for others to read, such as challenge tokens.
        """
    )

    def load(key):
        """
        The value stored at C{key}.

        @return: A Deferred firing with its C{bytes}, or C{None} when
            nothing is stored there.
        """

    def loadMany(keys):
        """
        The values stored at C{keys}, read together: one job, one query,
        where C{load} would make one per key.

        @param keys: A collection of keys.
        @return: A Deferred firing with a C{dict} of each of C{keys} to its
            C{bytes}, C{None} when nothing is stored there, or a
            L{ValueTooLarge} when its value is too large to read (a damaged
            record: the batch is still read); failing with L{StorageError}
            when any of them cannot be loaded otherwise (as C{load} would
            fail): load them one by one to tell which.
        """

    def store(key, value, fence=None):
        """
        Replace the value at C{key} with the C{bytes} C{value}, atomically.

        @param fence: An L{ILease} the write is made under, or C{None}.
        @return: A Deferred firing with C{None} once the write is durable;
            failing with L{StaleFence} when C{fence} was taken over, or
            L{StorageError} when C{value} is not bytes.
        """

    def delete(key, fence=None):
        """
        Remove the value at C{key}; nothing when there is none.

        @param fence: As for L{store}.
        @return: A Deferred firing with C{None}.
        """

    def list(prefix):
        """
        Every key that starts with C{prefix} (see L{checkPrefix}), without
        reading the values: how many there are is cheap to learn.

        @return: A Deferred firing with a sorted C{list} of keys.
        """

    def lease(name, seconds):
        """
        Take the lease C{name} for C{seconds}, unless another holder has it
        and it has not expired.  C{name} is checked as a key (see
        L{checkKey}), but leases are named apart from values and from each
        other: the lease C{a} and the lease C{a/b} are two leases, and
        neither touches the value at C{a}.

        @return: A Deferred firing with an L{ILease} whose token is larger
            than any the name had before, or C{None} when another holder
            has a live lease (a caller holding it already is another
            holder, too).
        """

    def watch(prefix, callback):
        """
        Call C{callback(key)} in the reactor thread for every change (store
        or delete) to a key starting with C{prefix} made through another
        storage object on the same place.  An exception C{callback} raises
        is logged (event 20188) and does not stop the watch.

        @return: A Deferred firing with a function of no argument that
            stops the calls, once the watch is in place; failing with
            L{StorageError} when the storage is closed.
        """

    def close():
        """
        Let go of what the storage holds: its leases, its threads, its
        connections.  Nothing may be called afterwards.

        @return: A Deferred firing with C{None} once done.
        """
