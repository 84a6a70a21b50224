"""
The ACME account: found or created on first use, kept in the storage.

A new account is created with its own key, unless the configuration names
the key of an existing account (C{account_key}), which is then looked up
with C{onlyReturnExisting}.  Creating one needs the operator's explicit
agreement to the CA's terms (C{agree_tos}) when the CA publishes terms, and
external account binding (C{eab_kid}, C{eab_hmac_key}) when the CA asks for
it.  The configured contacts are sent at creation and updated when they
change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from acme import messages
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IAgent

from . import events
from .acmeclient import ACMEClient
from .acmeerrors import AccountBusy, AccountError, ACMEProblem, ACMEServerUntrusted
from .config import ResourceOptions
from .coroutines import deferred
from .keygen import generateKey
from .keys import PrivateKey, jwkFor, keyToPEM, loadAccountKey
from .leasing import releaseQuietly, takeLease, underOwnLease
from .storage.interface import ILease
from .storage.records import AccountRecord, Records

_log = Logger()
T = TypeVar("T")


#: How long the lease on the account is taken for while it is created or
#: changed: longer than a registration takes.
ACCOUNT_LEASE = 300.0


def _current(record: AccountRecord, key: PrivateKey | None, options: ResourceOptions) -> bool:
    """
    Whether the stored account C{record} needs no change: it is
    registered, with the configured key C{key} if any, and its contacts.
    """
    return (
        record.url is not None
        and (key is None or keyToPEM(record.key) == keyToPEM(key))
        and set(record.contacts) == set(options.contacts)
    )


async def _record(
    options: ResourceOptions,
    records: Records,
    runInThread: Callable[..., Deferred[Any]],
    fence: ILease,
    key: PrivateKey | None,
) -> AccountRecord:
    """
    The stored account record, switched to the configured key C{key} if
    any.
    """
    record = await records.loadAccount(options.acmeURL)
    if key is not None:
        if record is None or keyToPEM(record.key) != keyToPEM(key):
            record = AccountRecord(key)
            await records.saveAccount(options.acmeURL, record, fence)
    elif record is None:
        record = AccountRecord(await runInThread(generateKey, "ecdsa-p256"))
        await records.saveAccount(options.acmeURL, record, fence)
    return record


async def _register(client: ACMEClient, options: ResourceOptions) -> str:
    """
    Create the account, or find the configured key's existing one.
    """
    if options.accountKeyFile is not None:
        try:
            return await client.findAccount()
        except ACMEProblem as problem:
            if problem.code != "accountDoesNotExist":
                raise
            raise AccountError(
                "account_key",
                f"{options.accountKeyFile} is the key of no account at {options.acmeURL}",
            ) from None
    meta = client.directory.meta
    terms = meta.terms_of_service
    if terms and not options.agreeTOS:
        raise AccountError(
            "agree_tos",
            f"the CA asks new accounts to agree to its terms of service at "
            f"{terms}; read them, then set agree_tos = yes",
        )
    binding = None
    if options.eabKid is not None and options.eabHMACKey is not None:
        binding = messages.ExternalAccountBinding.from_data(
            client.accountKey.public_key(),
            options.eabKid,
            options.eabHMACKey,
            client.directory,
        )
    elif meta.external_account_required:
        raise AccountError(
            "eab_kid",
            "the CA requires external account binding: set eab_kid and "
            "eab_hmac_key to the values the CA gave you",
        )
    registration = messages.NewRegistration.from_data(
        contact=options.contacts,
        terms_of_service_agreed=True if terms else None,
        external_account_binding=binding,
    )
    return await client.register(registration)


@deferred
async def connectAccount(
    http: IAgent,
    clock: IReactorTime,
    options: ResourceOptions,
    records: Records,
    runInThread: Callable[..., Deferred[Any]],
) -> ACMEClient:
    """
    An L{ACMEClient} for the configured CA, with its account registered and
    its contacts up to date.  A stored account that needs no change is
    used as it is; otherwise it is created or changed under the storage's
    lease C{account}, its writes fenced by it, and the lease let go after
    (a failed release is event 20202, not a failed connection).  The
    configured key file is read in a thread.

    @raise AccountError: when the account cannot be used as configured.
    @raise AccountBusy: when another user of the storage holds the lease.
    """
    key = None
    if options.accountKeyFile is not None:
        key = await runInThread(loadAccountKey, options.accountKeyFile)
    record = await records.loadAccount(options.acmeURL)
    if record is not None and _current(record, key, options):
        return await _client(http, clock, options, record)

    async def connect(lease: ILease) -> ACMEClient:
        return await _connect(http, clock, options, records, runInThread, lease, key)

    return await underAccountLease(records, connect)


async def underAccountLease(records: Records, work: Callable[[ILease], Awaitable[T]]) -> T:
    """
    Do C{work}, a change of the account, under the storage's lease
    C{account}, which it passes as the fence of its writes; the lease is
    let go after (a failed release is event 20202, not a failed change).

    @raise AccountBusy: when another user of the storage holds the lease.
    """
    lease = await takeLease(records.storage, "account", ACCOUNT_LEASE, _log)
    if lease is None:
        raise AccountBusy()
    try:
        return await work(lease)
    finally:
        await releaseQuietly(lease, _log)


@deferred
async def forgetRegistration(records: Records, acmeURL: str, key: PrivateKey) -> None:
    """
    Store the account at C{acmeURL} as unregistered, with C{key}, so that
    the next connection registers it again: under the lease C{account},
    taken for this write, and only while the stored account still has
    C{key}; not at all while another user of the storage holds the lease
    (it is changing the account: its write is the newer).
    """

    async def forget(lease: ILease) -> None:
        stored = await records.loadAccount(acmeURL)
        if stored is not None and keyToPEM(stored.key) == keyToPEM(key):
            await records.saveAccount(acmeURL, AccountRecord(key), lease)

    await underOwnLease(records.storage, "account", _log, forget)


async def _client(
    http: IAgent, clock: IReactorTime, options: ResourceOptions, record: AccountRecord
) -> ACMEClient:
    """
    An L{ACMEClient} for the configured CA with the account C{record}.
    """
    jwk, algorithm = jwkFor(record.key)
    try:
        return await ACMEClient.connect(
            http,
            clock,
            options.acmeURL,
            jwk,
            algorithm,
            accountURL=record.url,
            debug=options.debug,
            caFile=options.acmeCAFile,
        )
    except ACMEServerUntrusted as error:
        raise AccountError("acme_ca_file", error.message) from None


async def _connect(
    http: IAgent,
    clock: IReactorTime,
    options: ResourceOptions,
    records: Records,
    runInThread: Callable[..., Deferred[Any]],
    lease: ILease,
    key: PrivateKey | None,
) -> ACMEClient:
    """
    The work of L{connectAccount}, under C{lease}, with the configured
    key C{key} if any.
    """
    record = await _record(options, records, runInThread, lease, key)
    client = await _client(http, clock, options, record)
    if record.url is None:
        url = await _register(client, options)
        record = AccountRecord(record.key, url, options.contacts)
        await records.saveAccount(options.acmeURL, record, lease)
        events.ACCOUNT_REGISTERED.emit(_log, account=url, acme_url=options.acmeURL)
    if set(record.contacts) != set(options.contacts):
        await client.updateAccount(messages.UpdateRegistration(contact=options.contacts))
        changed = AccountRecord(record.key, record.url, options.contacts)
        await records.saveAccount(options.acmeURL, changed, lease)
        events.ACCOUNT_UPDATED.emit(
            _log,
            account=record.url,
            contacts=", ".join(options.contacts) or "none",
        )
    return client
