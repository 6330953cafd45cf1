"""Azure Functions entry point: triggers and bindings only; the work is in the `shared` package.

Nothing heavy is imported here, so Graph's validation handshake is answered fast on a cold start.
"""

import os

import azure.functions as func

from shared import workers
from shared.delivery import DEFAULT_EVENTGRID_QUEUE
from shared.pipeline.malware.options import DEFAULT_QUEUE as DEFAULT_SCAN_QUEUE
from shared.pipeline.poison import CHANGES_QUEUE, FETCH_QUEUE, LIFECYCLE_QUEUE, POLL_QUEUE
from shared.settings import DEFAULT_MAIL_POLL_SCHEDULE, get_settings

# A broken setting stops start-up here, with one line naming it.
get_settings()

STORAGE = "AzureWebJobsStorage"
# Read from the environment (no I/O) so the schedule has a default when the setting is absent.
MAINTAIN_SCHEDULE = os.environ.get("MAINTAIN_SCHEDULE", "0 */15 * * * *")
MAIL_POLL_SCHEDULE = os.environ.get("MAIL_POLL_SCHEDULE", DEFAULT_MAIL_POLL_SCHEDULE)
# The Storage queue Event Grid delivers Graph's events to (GRAPH_DELIVERY=eventgrid).
EVENTGRID_QUEUE = os.environ.get("EVENTGRID_QUEUE", "").strip() or DEFAULT_EVENTGRID_QUEUE
# The Storage queue Event Grid delivers Defender for Storage's scan results to (MALWARE_SCANNING=defender).
MALWARE_SCAN_QUEUE = os.environ.get("MALWARE_SCAN_QUEUE", "").strip() or DEFAULT_SCAN_QUEUE

# Every HTTP route needs a function key unless it says otherwise; Graph calls the webhooks with the
# host key `graphwebhook` in their URL (`?code=`), which the app reads as WEBHOOK_FUNCTION_KEY.
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="notifications", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@app.queue_output(arg_name="changes", queue_name=CHANGES_QUEUE, connection=STORAGE)
async def graph_notifications(req: func.HttpRequest, changes: func.Out[list[str]]) -> func.HttpResponse:
    return await workers.notifications(req, changes)


@app.route(route="lifecycle", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@app.queue_output(arg_name="events", queue_name=LIFECYCLE_QUEUE, connection=STORAGE)
async def graph_lifecycle(req: func.HttpRequest, events: func.Out[list[str]]) -> func.HttpResponse:
    return await workers.lifecycle(req, events)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return await workers.health()


@app.queue_trigger(arg_name="msg", queue_name=CHANGES_QUEUE, connection=STORAGE)
async def ingest(msg: func.QueueMessage) -> None:
    await workers.ingest(msg)


@app.queue_trigger(arg_name="msg", queue_name=LIFECYCLE_QUEUE, connection=STORAGE)
async def lifecycle(msg: func.QueueMessage) -> None:
    await workers.lifecycle_event(msg)


# Graph's notifications through Event Grid: each CloudEvent checked as the webhook checks an item, then queued
# where the webhook queues it.
@app.queue_trigger(arg_name="msg", queue_name=EVENTGRID_QUEUE, connection=STORAGE)
@app.queue_output(arg_name="changes", queue_name=CHANGES_QUEUE, connection=STORAGE)
@app.queue_output(arg_name="events", queue_name=LIFECYCLE_QUEUE, connection=STORAGE)
async def graph_events(msg: func.QueueMessage, changes: func.Out[list[str]], events: func.Out[list[str]]) -> None:
    await workers.graph_event(msg, changes, events)


# Defender for Storage's malware verdicts: a mail's hand-off waits until each file it stored has one.
@app.queue_trigger(arg_name="msg", queue_name=MALWARE_SCAN_QUEUE, connection=STORAGE)
async def malware_verdicts(msg: func.QueueMessage) -> None:
    await workers.malware_verdict(msg)


@app.timer_trigger(arg_name="timer", schedule=MAINTAIN_SCHEDULE, run_on_startup=False, use_monitor=True)
async def maintain(timer: func.TimerRequest) -> None:
    # Past due: the app was down when the timer should have run, so its webhook was down too.
    await workers.maintain(past_due=timer.past_due)


# IMAP and POP3 accounts: a serverless app keeps no IDLE connection, so a timer fans out one poll per account.
@app.timer_trigger(arg_name="timer", schedule=MAIL_POLL_SCHEDULE, run_on_startup=False, use_monitor=False)
@app.queue_output(arg_name="polls", queue_name=POLL_QUEUE, connection=STORAGE)
async def poll_accounts(timer: func.TimerRequest, polls: func.Out[list[str]]) -> None:
    await workers.poll_fan_out(polls)


@app.queue_trigger(arg_name="msg", queue_name=POLL_QUEUE, connection=STORAGE)
async def poll(msg: func.QueueMessage) -> None:
    await workers.poll(msg)


# Each new IMAP or POP3 mail a poll found: fetched and ingested as Graph mail is.
@app.queue_trigger(arg_name="msg", queue_name=FETCH_QUEUE, connection=STORAGE)
async def fetch(msg: func.QueueMessage) -> None:
    await workers.fetch(msg)


# Delegated mode's consent pages. Anonymous: the identity platform redirects the browser to the callback with
# `code`, which the host would read as a function key; the user check is in the callback.
@app.route(route="consent", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def consent(req: func.HttpRequest) -> func.HttpResponse:
    from shared.sources.graph import consent

    return await consent.start(req)


@app.route(route="consent/callback", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def consent_callback(req: func.HttpRequest) -> func.HttpResponse:
    from shared.sources.graph import consent

    return await consent.callback(req)
