"""Before the CLI creates, renews or recreates a subscription (`maintain`): the webhook URLs it would give Graph must
be the app's own.

With `--app` the settings are the app's own, read from the deployment, so its URLs are too. Otherwise they are this
machine's copy, and the app's own are what its subscriptions were made with: each folder's record keeps their
fingerprint. A copy with a stale, missing or different key or base URL would make maintain delete every
subscription and make them anew with URLs the app does not answer; the CLI refuses instead, with one line. A URL
that cannot be built (no WEBHOOK_BASE_URL) refuses too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import WebhookMismatch
from ..sources.graph.state import StateStore
from ..sources.graph.subscriptions import webhook_fingerprint

if TYPE_CHECKING:
    from ..runtime import Runtime


async def refuse_foreign_webhook(rt: Runtime, *, settings_from_app: bool) -> None:
    if not rt.settings.uses_graph:
        return
    mine = webhook_fingerprint(rt.settings)  # SettingsError when WEBHOOK_BASE_URL is missing
    if settings_from_app:
        return
    store = StateStore(rt.state)
    for key in await store.folder_keys():
        state, _ = await store.load(key)
        if state is not None and state.subscription_id and state.webhook not in (None, mine):
            raise WebhookMismatch(
                f"refused: the webhook URLs from this machine's settings (WEBHOOK_BASE_URL, WEBHOOK_FUNCTION_KEY) "
                f"differ from those the app's subscriptions call ({state.mailbox}/{state.folder}); maintain would "
                "recreate every subscription with them. Run it with the app's own settings: --app NAME "
                "--resource-group GROUP (docs/setup.md)"
            )
