"""The app's exception tree: one base, a branch per concern, one line of text each."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception as one short line for logs, manifests and poison records; URLs in it are redacted (an
    error may quote a request URL with a function key or a signature)."""
    from .logs import redact_text

    return redact_text(f"{type(exc).__name__}: {exc}".splitlines()[0])[:500]


class IngestError(Exception):
    """Base of every error this app raises on purpose."""


class SettingsError(IngestError):
    """A setting is missing or malformed; start-up stops with this one line."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"setting {name}: {problem}")
        self.name = name


class DeploymentError(IngestError):
    """A deployment's settings could not be read through Azure Resource Manager (the CLI's `--app`)."""


class RoutesUnavailable(IngestError):
    """ROUTES_BLOB has not been read as valid routes by this process yet: the mail waits (retried, then parked)."""


class WebhookMismatch(IngestError):
    """The CLI would give Graph webhook URLs other than the app's own; it refuses to create or renew."""


class SubscriptionNotYetKnown(IngestError):
    """A verified item names a subscription its folder's record did not have when last read, too recently to
    read again: the webhook fails the call, and Graph delivers it again."""


class InvalidNotification(IngestError):
    """A webhook body that is not a Graph change-notification collection."""


class QueueMessageError(IngestError):
    """A queue message this app cannot read; retrying will not help."""


class UnreadableQueueMessage(QueueMessageError):
    """A queue message that is neither JSON nor base64 of JSON (shared/queuetext.py): parked at once."""


class GraphError(IngestError):
    """Microsoft Graph answered with an error, or could not be reached."""

    def __init__(self, status: int, code: str, message: str, request: str) -> None:
        super().__init__(f"Graph {request} failed: {status} {code}: {message}")
        self.status = status
        self.code = code
        self.graph_message = message


class GraphNotFound(GraphError):
    """404: the resource (message, subscription, folder) does not exist (any more)."""


class GraphConflict(GraphError):
    """409: e.g. a subscription for the same resource and changeType exists."""


class GraphAuthError(GraphError):
    """401/403: the token is refused or the app lacks a permission."""


class GraphThrottled(GraphError):
    """429/503/504 still answered after the bounded retries."""


class AuthError(IngestError):
    """No token could be had from the identity platform."""


class CertificateError(AuthError):
    """A Key Vault certificate's backing secret holds no usable key and certificate."""


class NeedsConsent(AuthError):
    """Delegated mode: the mailbox's owner must consent (again) before the app can read it."""

    def __init__(self, mailbox: str, reason: str) -> None:
        super().__init__(f"mailbox {mailbox} needs consent: {reason}")
        self.mailbox = mailbox
        self.reason = reason


class StorageError(IngestError):
    """Blob or state storage refused an operation."""


class StateConflict(StorageError):
    """Another instance changed a state record first (ETag mismatch)."""


class MailServerError(IngestError):
    """An IMAP or POP3 server refused a command or could not be reached (transient unless a subclass says so)."""

    def __init__(self, account: str, problem: str) -> None:
        super().__init__(f"{account}: {problem}")
        self.account = account
        self.problem = problem


class MailAuthFailed(MailServerError):
    """The server refused the credentials: a wrong, expired or revoked password or token. Retrying will not
    help until someone fixes the secret."""


class MailServerBusy(MailServerError):
    """Too many connections, an [ALERT], a suggested backoff: try again later, after `retry_after` if known."""

    def __init__(self, account: str, problem: str, retry_after: float | None = None) -> None:
        super().__init__(account, problem)
        self.retry_after = retry_after


class MailTlsRefused(MailServerError):
    """No TLS could be had: the server offers no STARTTLS/STLS, or its certificate does not verify. Nothing is
    sent in the clear instead."""


class MailMessageGone(MailServerError):
    """The message is no longer where its reference says (expunged, or the folder's UIDVALIDITY changed)."""
