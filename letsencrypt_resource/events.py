"""
The catalogue of every event the product logs.

Each event has a numeric ID, a severity and a fixed text.  The text written
to the log always begins with the ID, so operators can filter on it.  IDs
20000 to 20114 keep the meaning they have in the product this one
re-creates; IDs from 20150 on are this product's own.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger, LogLevel


@attrs.frozen
class EventType:
    """
    One kind of event.

    @ivar id: The numeric event ID.
    @ivar level: The severity.
    @ivar text: A C{twisted.logger} format string naming the event's fields.
    """

    id: int
    level: LogLevel
    text: str

    @property
    def logFormat(self) -> str:
        """
        The format string as written in the log: the ID, then the text.
        """
        return f"{self.id} {self.text}"

    def emit(self, log: Logger, **fields: Any) -> None:
        """
        Log this event with C{fields}.
        """
        log.emit(self.level, self.logFormat, event_id=self.id, **fields)


_catalogue: dict[int, EventType] = {}


def _event(id: int, level: LogLevel, text: str) -> EventType:
    event = EventType(id, level, text)
    assert id not in _catalogue, id
    _catalogue[id] = event
    return event


DEBUG = _event(20000, LogLevel.debug, "{details}")
STORE_FAILED = _event(
    20009,
    LogLevel.critical,
    "Failed to write {path} for {domains}: {details}",
)
CERTIFICATE_STORED = _event(20015, LogLevel.info, "New certificate for {domains} stored at {path}.")
CERTIFICATE_IN_USE = _event(
    20016, LogLevel.info, "Service {service} now uses the CA-issued certificate for {domains}."
)
ISSUANCE_FAILED = _event(
    20017,
    LogLevel.critical,
    "Failed to get a new certificate for {domains}: {details}",
)
EXPIRY_WARNING = _event(
    20114,
    LogLevel.warn,
    "The certificate of {component} for {domains} expires in {days} days: {details}.",
)
ACME_URL_UPGRADED = _event(
    20150,
    LogLevel.warn,
    "The ACMEv1 directory {old_url} is retired; using {new_url} instead.",
)
CHALLENGE_SITE_LISTENING = _event(
    20151,
    LogLevel.info,
    "Answering ACME HTTP-01 challenges on {address} port {port}.",
)
CHALLENGE_SITE_FAILED = _event(
    20152,
    LogLevel.critical,
    "Cannot answer ACME HTTP-01 challenges on {address} port {port}: {details}",
)
PROVISIONAL_IN_USE = _event(
    20153,
    LogLevel.info,
    "Service {service} uses a provisional certificate, signed by this "
    "installation's own signer, for {domains} until the CA issues one.",
)
PROVISIONAL_SIGNER_MADE = _event(
    20180,
    LogLevel.info,
    "Made a new provisional signer, valid until {not_after}, that may sign "
    "for the {count} names in use and names under them only: {reason}.",
)
ACCOUNT_REGISTERED = _event(
    20154, LogLevel.info, "ACME account {account} at {acme_url} is ready to use."
)
ACCOUNT_UPDATED = _event(
    20162, LogLevel.info, "ACME account {account} now has the contacts {contacts}."
)
ORDER_STARTED = _event(
    20155,
    LogLevel.info,
    "Requesting a certificate for {domains} from {acme_url}: {reason}.",
)
SERVICE_LISTENING = _event(
    20156,
    LogLevel.info,
    "Service {service} is listening on {address} port {port}.",
)
SERVICE_LISTEN_FAILED = _event(
    20157,
    LogLevel.critical,
    "Service {service} cannot listen on {address} port {port}: {details}",
)
STORED_CERTIFICATE_LOADED = _event(
    20158,
    LogLevel.info,
    "Loaded the stored certificate for {domains}, valid until {not_after}.",
)

RENEWAL_PLANNED = _event(
    20159,
    LogLevel.info,
    "The certificate for {domains} is due for renewal at {when}: {reason}.",
)
RETRY_SCHEDULED = _event(
    20160,
    LogLevel.warn,
    "Next attempt for {domains} at {when}, in {delay} seconds, after "
    "{failures} failed attempts in a row.",
)
RENEWAL_INFO_FAILED = _event(
    20161,
    LogLevel.warn,
    "Cannot get the CA's renewal information for {domains}: {details}",
)

STORED_STATE_IGNORED = _event(
    20163,
    LogLevel.error,
    "Ignoring damaged stored state for {domains}; it will be made anew: {details}",
)

CONTROL_SOCKET_FAILED = _event(
    20175,
    LogLevel.critical,
    "Cannot answer the operations command on {path}: {details}",
)
STATE_LOCK_RESTORED = _event(
    20176,
    LogLevel.warn,
    "The lock file {path} was removed or replaced while the server ran; "
    "it is made anew and held again.",
)
STATE_LOCK_LOST = _event(
    20177,
    LogLevel.critical,
    "The state directory {directory} is no longer locked by this server: {details}",
)
STORE_RECOVERED = _event(
    20185,
    LogLevel.info,
    "Wrote {path} for {domains}, which had failed before.",
)
REPLACES_REFUSED = _event(
    20186,
    LogLevel.warn,
    "The CA refused the order for {domains} that names the certificate it "
    "replaces; ordering again without naming it: {details}",
)
STORED_WAIT_CAPPED = _event(
    20187,
    LogLevel.warn,
    "The saved next attempt for {domains}, {saved}, is later than any wait "
    "this product sets (a clock that ran ahead, or a damaged file); the next "
    "attempt is at {when} instead.",
)
WATCH_CALLBACK_FAILED = _event(
    20188,
    LogLevel.error,
    "A change notification for {key} failed in the code that watches it: {details}",
)
STALE_WRITE_REFUSED = _event(
    20189,
    LogLevel.warn,
    "Refused to write {key}: it was made under a lease (token {token}) that "
    "another holder has taken since (token {newest}).",
)
COMPROMISED_CERTIFICATE_IGNORED = _event(
    20190,
    LogLevel.warn,
    "Not using the stored certificate for {domains}: its key was revoked as compromised.",
)
ORDER_RESUMED = _event(
    20191,
    LogLevel.info,
    "Resuming the order {order} for {domains}, which an earlier attempt left {status}.",
)
ORDER_DROPPED = _event(
    20192,
    LogLevel.info,
    "Placing a new order for {domains} instead of resuming {order}: {details}.",
)
KEY_COMPROMISED = _event(
    20193,
    LogLevel.warn,
    "The key of the certificate for {domains} is recorded as compromised; "
    "it will never be used again.",
)
RELOAD_STARTED = _event(
    20195,
    LogLevel.info,
    "Reloading the configuration from {path}.",
)
RELOADED = _event(
    20196,
    LogLevel.info,
    "Reloaded the configuration from {path}: services added: {added}; "
    "removed: {removed}; changed: {changed}; unchanged: {unchanged}.",
)
RELOAD_REFUSED = _event(
    20197,
    LogLevel.error,
    "The configuration in {path} is not applied; the running configuration goes on: {details}",
)
RESTART_NEEDED = _event(
    20198,
    LogLevel.warn,
    "Changes to [{section}] in {path} take effect only after a restart: {options}.",
)
ORDER_BUSY = _event(
    20199,
    LogLevel.info,
    "Not ordering a certificate for {domains} now: another user of the storage "
    "holds its lease; looking again when that lease ends.",
)
ORDER_ABANDONED = _event(
    20200,
    LogLevel.warn,
    "Abandoned the order for {domains} before finalizing it: its lease passed "
    "to another user of the storage ({details}); looking again at the next check.",
)

CERTIFICATE_WRITE_STALE = _event(
    20201,
    LogLevel.warn,
    "The certificate for {domains} was not stored under the order's lease, which "
    "another user of the storage took over: {details}.",
)
LEASE_RELEASE_FAILED = _event(
    20202,
    LogLevel.warn,
    "Could not release the storage lease {name}; it expires by itself: {details}",
)
STORED_CERTIFICATE_REFUSED = _event(
    20203,
    LogLevel.warn,
    "Not using the certificate another user of the storage stored for {domains}: {details}.",
)
STALE_CHALLENGES_REMOVED = _event(
    20204,
    LogLevel.info,
    "Removed {count} challenge token(s) left in the storage for longer than any order runs.",
)

CLUSTER_DATABASE_LOST = _event(
    20215,
    LogLevel.warn,
    "Node {node_name} cannot reach the cluster database: {details}. Serving from its "
    "local cache; nobody orders on this node until the database is back.",
)
CLUSTER_DATABASE_BACK = _event(
    20216,
    LogLevel.info,
    "Node {node_name} reached the cluster database again after {seconds} seconds; work resumes.",
)
CLUSTER_LEASE_TAKEN = _event(
    20217,
    LogLevel.debug,
    "Node {node_name} took the lease {name} (fencing token {token}).",
)
CLUSTER_LEASE_LOST = _event(
    20218,
    LogLevel.warn,
    "Node {node_name} lost the lease {name}: {details}",
)
CLUSTER_CERTIFICATE_RECEIVED = _event(
    20219,
    LogLevel.info,
    "Node {node_name} received {key} from the cluster, stored by node {stored_by}.",
)
CLUSTER_KEY_MISMATCH = _event(
    20220,
    LogLevel.critical,
    "Node {node_name} refuses the cluster database: cluster_key_file {path} is not the "
    "key file the database was first used with ({details}).",
)
CLUSTER_CACHE_WRITE_FAILED = _event(
    20221,
    LogLevel.warn,
    "Node {node_name} could not copy {key} to its cache in the state directory: {details}",
)
DEPLOY_STARTED = _event(
    20245,
    LogLevel.info,
    "Running the deploy command for {domains}: {command}",
)
DEPLOY_SUCCEEDED = _event(
    20246,
    LogLevel.info,
    "The deploy command for {domains} ended successfully after {duration} seconds.",
)
DEPLOY_FAILED = _event(
    20247,
    LogLevel.error,
    "The deploy command for {domains} failed: {details}; it runs again at the next check.",
)
DEPLOY_OUTPUT = _event(
    20248,
    LogLevel.info,
    "The deploy command for {domains} wrote on {stream}: {line}",
)
DEPLOY_OUTPUT_TRUNCATED = _event(
    20249,
    LogLevel.warn,
    "The deploy command for {domains} wrote more than the {limit} lines logged: "
    "{lines} more line(s), {bytes} bytes, not logged.",
)
METRICS_LISTENING = _event(
    20250,
    LogLevel.info,
    "Prometheus metrics are served at /metrics on {address} port {port}.",
)
METRICS_FAILED = _event(
    20251,
    LogLevel.error,
    "Cannot serve the Prometheus metrics on {address} port {port}: {details}",
)
FTPS_SESSION_LIMIT = _event(
    20230,
    LogLevel.warn,
    "FTPS service {service} refused a connection from {client}: {limit} sessions "
    "from that address are open.",
)
FTPS_DATA_WRONG_PEER = _event(
    20231,
    LogLevel.warn,
    "FTPS service {service} refused a data connection from {client}: the session's "
    "client is {peer}.",
)
FTPS_DATA_NOT_RESUMED = _event(
    20232,
    LogLevel.warn,
    "FTPS service {service} closed a data connection from {client} that did not "
    "resume its control connection's TLS session.",
)
FTPS_LOGIN_FAILED = _event(
    20233,
    LogLevel.info,
    "FTPS service {service} refused a login as {user} from {client}.",
)
FTPS_UPLOAD_FAILED = _event(
    20234,
    LogLevel.warn,
    "FTPS service {service} did not store the upload of {path} from {client}: {details}.",
)
FTPS_USERS_KEPT = _event(
    20235,
    LogLevel.error,
    "FTPS service {service} keeps its accounts: the users_file {path} cannot be used: {details}.",
)
CLUSTER_HEARTBEAT_FAILED = _event(
    20222,
    LogLevel.warn,
    "Node {node_name} could not write its records in the cluster database: {details}. "
    "Other nodes and status will show it as stale after {stale_minutes} minutes.",
)
CLUSTER_HEARTBEAT_BACK = _event(
    20223,
    LogLevel.info,
    "Node {node_name} writes its records in the cluster database again.",
)
CLUSTER_NODE_STALE = _event(
    20224,
    LogLevel.warn,
    "Node {node_name} has not heard from node {other} for {minutes} minutes: it stopped, "
    "or cannot reach the cluster database.",
)
CLUSTER_NODE_BACK = _event(
    20225,
    LogLevel.info,
    "Node {node_name} hears from node {other} again.",
)
ORDER_NOT_NEEDED = _event(
    20226,
    LogLevel.info,
    "Not ordering a certificate for {domains}: another user of the storage stored "
    "one before this node took its lease, and it is in service now.",
)
CONNECTIONS_LEFT_OPEN = _event(
    20227,
    LogLevel.warn,
    "Stopped listening: {connections} connections on {listeners} listeners (the first "
    "on {listener}) still open after {seconds} seconds were cut.",
)
DATABASE_POOL_MESSAGE = _event(
    20228,
    LogLevel.warn,
    "The cluster database's connection pool says: {details} ({repeated} more of its "
    "messages were held back since the last one written; one is written every "
    "{seconds} seconds at most).",
)

CHALLENGE_FALLBACK = _event(
    20254,
    LogLevel.warn,
    "The {failed} validation of {domains} failed: {details}; ordering again with {next}.",
)
FTPS_WARNINGS_LEFT_OUT = _event(
    20236,
    LogLevel.warn,
    "FTPS service {service} left {count} events {event} out of the log in the last {seconds} s.",
)
FTPS_LOGINS_CLOSED = _event(
    20237,
    LogLevel.warn,
    "FTPS service {service} closed a session from {client} after {count} failed logins.",
)
FTPS_NO_PASSIVE_PORT = _event(
    20238,
    LogLevel.warn,
    "FTPS service {service} has no passive port free for {client}: {details}.",
)
FTPS_SESSIONS_FULL = _event(
    20239,
    LogLevel.warn,
    "FTPS service {service} refused a connection from {client}: {limit} sessions are open.",
)
FTPS_STALE_UPLOADS = _event(
    20240,
    LogLevel.info,
    "FTPS service {service} removed {count} temporary files of uploads that never ended.",
)
FTPS_NO_CERTIFICATE = _event(
    20241,
    LogLevel.warn,
    "FTPS service {service} closed a connection from {client}: it has no certificate "
    "it can present yet.",
)
CERTIFICATE_UNUSABLE = _event(
    20260,
    LogLevel.error,
    "The stored certificate for {domains} cannot be presented: its key cannot be read "
    "or does not match; its services go on a provisional certificate and a new one is "
    "ordered.",
)

CA_FALLBACK = _event(
    20265,
    LogLevel.warn,
    "Ordering for {domains} from the fallback CA {acme_url} ({section}): {why}.",
)

CA_PRIMARY_AGAIN = _event(
    20266,
    LogLevel.info,
    "Ordering for {domains} from the first CA {acme_url} again, no longer from {previous}.",
)

HTTPS_NO_CERTIFICATE = _event(
    20267,
    LogLevel.warn,
    "Service {service} closed {count} connections, the last from {client}: it has no "
    "certificate it can present yet.",
)

CERTIFICATE_NOT_EXPORTED = _event(
    20268,
    LogLevel.error,
    "The certificate for {domains} is not exported to the store directory: its record "
    "{path} cannot be read: {details}. A new certificate is ordered, and exported, at the "
    "first handshake for it (event 20260) or at its next renewal, whichever comes first.",
)

ACME_LOAD_FAILED = _event(
    20255,
    LogLevel.critical,
    "The modules that speak ACME cannot be loaded: importing {module} failed: {error} "
    "({failures} failed loads since the last that succeeded); no certificate can be ordered "
    "or renewed until they load.",
)
ACME_LOADED = _event(
    20256,
    LogLevel.info,
    "The modules that speak ACME are loaded, after {failures} failed loads.",
)

STARTED_UP = _event(
    20208,
    LogLevel.info,
    "Start-up put {services} services in service in {seconds} seconds: {issued} on "
    "CA-issued certificates ({stored} stored certificates loaded), {provisional} on "
    "provisional ones; {waiting} domain sets wait for a certificate.",
)
SERVICES_LISTENING = _event(
    20209,
    LogLevel.info,
    "{listening} services listen, {failed} cannot, {waiting} wait for a certificate, "
    "{seconds} seconds after they started.",
)
SITE_NOT_BUILT = _event(
    20210,
    LogLevel.critical,
    "Service {service} cannot build its site: {error}; {closed} connections closed since "
    "the last such event. It tries again at the next connection.",
)

DEPLOY_DUE_UNSAVED = _event(
    20229,
    LogLevel.warn,
    "Whether the deploy command is due could not be recorded at {key}: {error}; "
    "the record is written again at the next check.",
)


READ_AHEAD_STOPPED = _event(
    20205,
    LogLevel.warn,
    "The read-ahead process of the state directory {directory} was stopped: {why}; "
    "the storage's thread reads the {remaining} files it had not given.",
)
READ_AHEAD_NOT_STARTED = _event(
    20206,
    LogLevel.warn,
    "The read-ahead process of the state directory {directory} could not be started: "
    "{why}; the storage's thread reads its {remaining} files.",
)
READ_AHEAD_OUTPUT = _event(
    20207,
    LogLevel.warn,
    "The read-ahead process of the state directory {directory} wrote on its error output: {output}",
)


def catalogue() -> dict[int, EventType]:
    """
    Every event type, by ID.
    """
    return dict(_catalogue)
