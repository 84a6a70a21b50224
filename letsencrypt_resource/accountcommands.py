"""
The account commands: show the ACME account at one of the resource's CAs
(its own by default, or a fallback CA named by its section), replace its
key, or deactivate it.  Each acts on that CA's account only, and only
when there is one: none registers an account.
"""

from __future__ import annotations

from typing import Any

from acme import messages

from .account import underAccountLease
from .acmeclient import ACMEClient
from .carotation import CA, CARotation
from .coroutines import deferred
from .keygen import generateKey
from .keys import jwkFor, keyType
from .operationerror import OperationError
from .storage.interface import ILease
from .storage.records import AccountRecord, Records
from .writequeue import Runner


def chooseCA(cas: CARotation, name: str | None) -> CA:
    """
    The CA of C{cas} whose section is C{name}: a C{[cas/<id>]} section, or
    the resource's own; the resource's own CA when C{None}.

    @raise OperationError: when no CA has that section.
    """
    if name is None:
        return cas.primary
    for ca in cas.all:
        if ca.label == name:
            return ca
    known = ", ".join(ca.label for ca in cas.all)
    raise OperationError(f"{name!r} is not one of the resource's CAs: {known}")


def describe(ca: CA, client: ACMEClient, account: messages.Registration) -> dict[str, Any]:
    """
    The account of C{client} at C{ca}, as the CA knows it, as JSON-ready
    data.
    """
    return {
        "ca": ca.label,
        "acme_url": ca.options.acmeURL,
        "url": client.accountURL,
        "status": str(account.status) if account.status else None,
        "contacts": list(account.contact or ()),
        "key_type": keyType(client.accountKey.key),
        "key_thumbprint": client.accountKey.thumbprint().hex(),
    }


class AccountCommands:
    """
    The account commands, on the CAs of a resource.
    """

    def __init__(self, cas: CARotation, records: Records, runInThread: Runner):
        """
        @param records: Where the accounts are stored.
        @param runInThread: Runs key generation off the reactor thread.
        """
        self._cas = cas
        self._records = records
        self._runInThread = runInThread

    async def _client(self, name: str | None) -> tuple[CA, ACMEClient]:
        """
        The CA C{name} (see L{chooseCA}) and the ACME client of the account
        the resource has there.

        @raise OperationError: when it has none there yet, rather than
            register one (C{account_key} names one that exists).
        """
        ca = chooseCA(self._cas, name)
        if not ca.connection.connected and ca.options.accountKeyFile is None:
            record = await self._records.loadAccount(ca.options.acmeURL)
            if record is None or record.url is None:
                raise OperationError(
                    f"there is no account at {ca.label} ({ca.options.acmeURL}) yet: "
                    "the first order from that CA registers one"
                )
        return ca, await ca.connection.acmeClient()

    @deferred
    async def show(self, name: str | None) -> dict[str, Any]:
        """
        The account at the CA C{name} (see L{_client}) as it knows it.
        """
        ca, client = await self._client(name)
        return describe(ca, client, await client.account())

    @deferred
    async def rollover(self, name: str | None) -> dict[str, Any]:
        """
        Replace the key of the account at the CA C{name} (see L{_client})
        with a new one, at the CA and in the state.

        @raise OperationError: when the key comes from C{account_key}.
        """
        ca = chooseCA(self._cas, name)
        options = ca.options
        if options.accountKeyFile is not None:
            raise OperationError(
                "the account key comes from option 'account_key'; replace that "
                "file's key with the CA's key-change tool instead"
            )
        ca, client = await self._client(name)
        newKey = await self._runInThread(generateKey, "ecdsa-p256")

        async def change(lease: ILease) -> None:
            await client.changeKey(*jwkFor(newKey))
            record = AccountRecord(newKey, client.accountURL, options.contacts)
            await self._records.saveAccount(options.acmeURL, record, lease)

        await underAccountLease(self._records, change)
        return describe(ca, client, await client.account())

    @deferred
    async def deactivate(self, name: str | None) -> dict[str, Any]:
        """
        Deactivate the account at the CA C{name} (see L{_client}) for
        good; the state keeps
        a new key for that CA, so its next order creates a new account.
        """
        ca, client = await self._client(name)
        newKey = await self._runInThread(generateKey, "ecdsa-p256")

        async def deactivate(lease: ILease) -> Any:
            update = messages.UpdateRegistration(status="deactivated")
            account = await client.updateAccount(update)
            await self._records.saveAccount(ca.options.acmeURL, AccountRecord(newKey), lease)
            return account

        row = describe(ca, client, await underAccountLease(self._records, deactivate))
        ca.connection.forget()
        return row
