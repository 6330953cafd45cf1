"""The dev host: pure parts (NCRONTAB, routes, settings) and a real run against Azurite."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from local.azurite import Azurite
from local.devhost.config import (
    ConfigError,
    QueueOptions,
    function_timeout,
    load_host_json,
    load_local_settings,
    parse_timespan,
    resolve_expressions,
)
from local.devhost.keys import HostKeys, load_keys, write_keys
from local.devhost.ncrontab import CronError, CronSchedule, parse_field
from local.devhost.routes import RouteTable

PROJECT = Path(__file__).resolve().parents[2]
KEYS = HostKeys(master="master-key-for-tests", function_keys={"graphwebhook": "host-key-for-tests"})
ADMIN = {"x-functions-key": KEYS.master}


# --- NCRONTAB ------------------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_parse_field_forms() -> None:
    assert parse_field("*", 0, 5, field="f") == {0, 1, 2, 3, 4, 5}
    assert parse_field("*/15", 0, 59, field="f") == {0, 15, 30, 45}
    assert parse_field("1-3,10", 0, 59, field="f") == {1, 2, 3, 10}
    assert parse_field("10-20/5", 0, 59, field="f") == {10, 15, 20}
    assert parse_field("5/20", 0, 59, field="f") == {5, 25, 45}
    days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
    assert parse_field("MON-FRI", 0, 6, field="day-of-week", names=days) == {1, 2, 3, 4, 5}


BAD_EXPRESSIONS = [
    "", "* * * * *  * *", "60 * * * * *", "* * 24 * * *", "*/0 * * * * *", "5-1 * * * * *",
    "a * * * * *", "* * * 0 * *", "* * * * 13 *", "* * * * * 7", "1,,2 * * * * *",
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_EXPRESSIONS)
def test_invalid_expressions(bad: str) -> None:
    with pytest.raises(CronError):
        CronSchedule.parse(bad)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2024-03-01T10:02:30", ["2024-03-01T10:05:00", "2024-03-01T10:10:00"]),
        ("*/10 * * * * *", "2024-03-01T10:00:00", ["2024-03-01T10:00:10", "2024-03-01T10:00:20"]),
        (
            "0 30 9 * * MON-FRI",
            "2024-03-01T10:00:00",
            ["2024-03-04T09:30:00", "2024-03-05T09:30:00"],
        ),  # Fri -> Mon
        ("0 0 0 29 FEB *", "2023-01-01T00:00:00", ["2024-02-29T00:00:00", "2028-02-29T00:00:00"]),
        ("0 0 12 31 * *", "2024-04-01T00:00:00", ["2024-05-31T12:00:00", "2024-07-31T12:00:00"]),
        ("0 0 0 1 1 *", "2024-12-31T23:59:59", ["2025-01-01T00:00:00", "2026-01-01T00:00:00"]),
        ("15 10 * * *", "2024-03-01T10:15:00", ["2024-03-02T10:15:00", "2024-03-03T10:15:00"]),  # five fields
        ("0 0 * * * 0", "2024-03-01T00:00:00", ["2024-03-03T00:00:00", "2024-03-03T01:00:00"]),  # Sunday is 0
        (
            "0 0 0 13 * FRI",
            "2024-01-01T00:00:00",
            ["2024-09-13T00:00:00", "2024-12-13T00:00:00"],
        ),  # day AND weekday
    ],
)
def test_next_occurrences(expression: str, after: str, expected: list[str]) -> None:
    schedule = CronSchedule.parse(expression)
    assert schedule.occurrences(at(after), 2) == [at(e) for e in expected]


def test_next_after_is_strict_and_ignores_microseconds() -> None:
    schedule = CronSchedule.parse("* * * * * *")
    assert schedule.next_after(at("2024-03-01T10:00:00.700000")) == at("2024-03-01T10:00:01")
    assert schedule.next_after(datetime(2024, 3, 1, 10, 0, 0)) == at("2024-03-01T10:00:01")  # naive = UTC


def test_impossible_schedule() -> None:
    with pytest.raises(CronError):
        CronSchedule.parse("0 0 0 31 FEB *").next_after(at("2024-01-01T00:00:00"))


# --- routes, settings, host.json ------------------------------------------------------------------


def test_route_templates() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("items/{id:int}/{name?}", "item")
    table.add("items/special", "special")
    table.add("files/{name}.{ext}", "file")
    table.add("static/{*rest}", "static")
    assert table.match("/items/5") == [("item", {"id": "5"})]
    assert table.match("/ITEMS/5/bob") == [("item", {"id": "5", "name": "bob"})]
    assert table.match("/items/x") == []
    assert table.match("/items/special")[0] == ("special", {})
    assert table.match("/files/report.final.pdf") == [("file", {"name": "report.final", "ext": "pdf"})]
    assert table.match("/static/a/b/c") == [("static", {"rest": "a/b/c"})]


def test_local_settings_do_not_override_environment(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": {"A": "from-file", "B": "from-file", "N": 3, "T": True}})
    )
    environ = {"B": "from-env"}
    assert sorted(load_local_settings(tmp_path, environ)) == ["A", "N", "T"]
    assert environ == {"A": "from-file", "B": "from-env", "N": "3", "T": "true"}
    assert load_local_settings(tmp_path / "missing", environ) == []


def test_host_json_environment_overrides(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"queues": {"batchSize": 8, "visibilityTimeout": "00:00:30"}}})
    )
    environ = {
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:02",
        "azurefunctionsjobhost__Extensions__Queues__MaxDequeueCount": "3",
        "AzureFunctionsJobHost__extensions__queues__messageEncoding": "none",
    }
    options = QueueOptions.from_host_json(load_host_json(tmp_path, environ))
    assert options == QueueOptions(
        batch_size=8,
        new_batch_threshold=4,
        max_polling_interval=timedelta(minutes=1),
        visibility_timeout=timedelta(seconds=2),
        max_dequeue_count=3,
        message_encoding="none",
    )
    assert QueueOptions.from_host_json({}) == QueueOptions()  # defaults: 16, 8, 1 min, 0, 5, base64
    with pytest.raises(ConfigError, match="batchSize"):
        QueueOptions.from_host_json({"extensions": {"queues": {"batchSize": 64}}})


def test_timespans() -> None:
    assert parse_timespan("00:00:02", what="x") == timedelta(seconds=2)
    assert parse_timespan("1.02:03:04.5", what="x") == timedelta(days=1, hours=2, minutes=3, seconds=4.5)
    assert parse_timespan(2000, what="x") == timedelta(seconds=2)  # a JSON number is milliseconds
    with pytest.raises(ConfigError):
        parse_timespan("soon", what="x")


def test_function_timeout() -> None:
    assert function_timeout({}) == timedelta(minutes=30)
    assert function_timeout({"functionTimeout": "00:05:00"}) == timedelta(minutes=5)
    assert function_timeout({"functionTimeout": "-1"}) is None


def test_expressions() -> None:
    environ = {"Q": "work", "P": "x"}
    assert resolve_expressions({"queueName": "%Q%-%P%", "methods": ["%P%"], "n": 1}, environ, where="w") == {
        "queueName": "work-x",
        "methods": ["x"],
        "n": 1,
    }
    with pytest.raises(ConfigError, match="'%NOPE%' does not resolve"):
        resolve_expressions("%NOPE%", environ, where="w")


# --- the dev host against Azurite --------------------------------------------------------------------

APP = """
import json
import logging
import os

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="orders/{id:int}/{note?}", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="%ORDERS_QUEUE%", connection="AzureWebJobsStorage")
def place_order(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    order = {"id": int(req.route_params["id"]), "note": req.route_params.get("note"), "body": req.get_json()}
    out.set(json.dumps(order))
    return func.HttpResponse(json.dumps(order), status_code=201, mimetype="application/json",
                             headers={"X-Order": str(order["id"])})


@app.queue_trigger(arg_name="msg", queue_name="%ORDERS_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="done", queue_name="done", connection="AzureWebJobsStorage")
async def handle_order(msg: func.QueueMessage, done: func.Out[str], context: func.Context) -> None:
    order = msg.get_json()
    logging.info("order %s, dequeue count %s, function %s",
                 order["id"], msg.dequeue_count, context.function_name)
    done.set(f"done:{order['id']}")


@app.queue_trigger(arg_name="msg", queue_name="broken", connection="AzureWebJobsStorage")
def always_fails(msg: func.QueueMessage) -> None:
    logging.info("attempt %s", msg.dequeue_count)
    raise RuntimeError("this function always fails")


@app.route(route="settings", methods=["GET"])
def settings(req: func.HttpRequest) -> func.HttpResponse:
    names = ["FROM_FILE", "FROM_BOTH"]
    return func.HttpResponse(json.dumps({n: os.environ.get(n) for n in names}), mimetype="application/json")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> str:
    raise ValueError("secret detail")


@app.route(route="retired")
def retired(req: func.HttpRequest) -> str:
    return "should be disabled"


@app.route(route="unwritable", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="Not_A_Valid_Queue_Name", connection="AzureWebJobsStorage")
def unwritable(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set("never stored")
    return func.HttpResponse("accepted", status_code=202)


@app.route(route="guarded", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@app.queue_output(arg_name="out", queue_name="guarded", connection="AzureWebJobsStorage")
def guarded(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set("called")
    return func.HttpResponse("in", status_code=202)


@app.route(route="adminonly", auth_level=func.AuthLevel.ADMIN)
def adminonly(req: func.HttpRequest) -> str:
    return "admin"


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer")
@app.queue_output(arg_name="$return", queue_name="ticks", connection="AzureWebJobsStorage")
def tick(timer: func.TimerRequest) -> str:
    return f"tick past_due={timer.past_due}"
"""

HOST_JSON = {
    "version": "2.0",
    "logging": {"logLevel": {"default": "Information"}},
    # visibilityTimeout is long here on purpose: the test overrides it through the environment.
    "extensions": {"queues": {"maxPollingInterval": "00:00:01", "maxDequeueCount": 2, "visibilityTimeout": "00:05:00"}},
}


def write_app(folder: Path, source: str, host_json: dict[str, Any], values: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "function_app.py").write_text(textwrap.dedent(source))
    (folder / "host.json").write_text(json.dumps(host_json))
    if values is not None:
        (folder / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    write_keys(folder / "keys.json", KEYS)
    return folder


def devhost_command(app_dir: Path, ready_file: Path) -> list[str]:
    return [sys.executable, "-m", "local.devhost", "--app-dir", str(app_dir), "--port", "0",
            "--ready-file", str(ready_file), "--shutdown-timeout", "5",
            "--keys-file", str(app_dir / "keys.json")]  # fmt: skip


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class RunningHost:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log_file: Path) -> None:
        self.process = process
        self.url = url
        self.log_file = log_file

    def log(self) -> str:
        return self.log_file.read_text()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as instance:
        yield instance


@pytest.fixture(scope="module")
def host(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    root = tmp_path_factory.mktemp("devhost")
    app_dir = write_app(
        root / "app",
        APP,
        HOST_JSON,
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",  # overridden by the environment below
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "ORDERS_QUEUE": "orders",
            "TICK_SCHEDULE": "0 0 0 1 1 *",
            "FROM_FILE": "file",
            "FROM_BOTH": "file",
        },
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "AzureWebJobsStorage": azurite.connection_string,
        "FROM_BOTH": "environment",
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01",
        "AzureWebJobs.retired.Disabled": "true",
    }
    ready = root / "ready.json"
    log_file = root / "devhost.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(devhost_command(app_dir, ready), cwd=root, env=env, stderr=log, stdout=log)
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, 20, "the dev host's ready file")
        assert process.poll() is None, log_file.read_text()
        info = json.loads(ready.read_text())
        assert info["pid"] == process.pid
        yield RunningHost(process, info["url"], log_file)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def queue(azurite: Azurite, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def take_all(client: QueueClient) -> list[str]:
    """Receive (and so hide for 30 s) every visible message's raw text."""
    return [str(m.content) for m in client.receive_messages(messages_per_page=32, max_messages=32)]


def collect(client: QueueClient, count: int, timeout: float) -> list[str]:
    texts: list[str] = []

    def enough() -> bool:
        texts.extend(take_all(client))
        return len(texts) >= count

    wait_for(enough, timeout, f"{count} message(s) in '{client.queue_name}'")
    return texts


def test_status_and_unknown_routes(host: RunningHost) -> None:
    assert httpx.get(f"{host.url}/admin/host/status", headers=ADMIN).json()["state"] == "Running"
    assert httpx.get(f"{host.url}/api/nothing").status_code == 404
    assert httpx.post(f"{host.url}/admin/functions/nothing", json={"input": ""}, headers=ADMIN).status_code == 404
    assert httpx.post(f"{host.url}/admin/functions/tick", content=b"not json", headers=ADMIN).status_code == 400


def test_function_level_route_needs_a_host_key(host: RunningHost, azurite: Azurite) -> None:
    url = f"{host.url}/api/guarded"
    refused = [
        httpx.post(url),
        httpx.post(url, params={"code": "wrong"}),
        httpx.post(url, headers={"x-functions-key": "host-key-for-test"}),  # a prefix of the key
        httpx.post(url, params={"code": ""}),
    ]
    assert [r.status_code for r in refused] == [401, 401, 401, 401]
    assert all(r.content == b"" for r in refused)
    assert httpx.post(url, params={"code": KEYS.function_keys["graphwebhook"]}).status_code == 202
    assert httpx.post(url, headers={"x-functions-key": KEYS.function_keys["graphwebhook"]}).status_code == 202
    assert httpx.post(url, params={"code": KEYS.master}).status_code == 202  # the master key opens every level
    # Only the two calls with a key ran the function: a refused call has no side effect.
    assert len(collect(queue(azurite, "guarded"), 3, 10)) == 3
    time.sleep(0.5)
    assert take_all(queue(azurite, "guarded")) == []


def test_admin_level_and_admin_api_need_the_master_key(host: RunningHost) -> None:
    host_key = {"x-functions-key": KEYS.function_keys["graphwebhook"]}
    assert httpx.get(f"{host.url}/api/adminonly", headers=host_key).status_code == 401
    assert httpx.get(f"{host.url}/api/adminonly", headers=ADMIN).text == "admin"
    assert httpx.get(f"{host.url}/admin/host/status").status_code == 401
    assert httpx.post(f"{host.url}/admin/functions/tick", json={"input": ""}, headers=host_key).status_code == 401
    assert httpx.get(f"{host.url}/admin/functions", params={"code": KEYS.master}).status_code == 200


def test_missing_keys_file_is_made_with_fresh_keys(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "keys.json"
    made = load_keys(path)
    assert load_keys(path) == made and made.master and made.function_keys["default"]
    assert path.stat().st_mode & 0o077 == 0
    path.write_text("{}")
    with pytest.raises(ConfigError):
        load_keys(path)


def test_disabled_function_is_left_out(host: RunningHost) -> None:
    assert httpx.get(f"{host.url}/api/retired").status_code == 404
    listed = json.dumps(httpx.get(f"{host.url}/admin/functions", headers=ADMIN).json())
    assert "retired" not in listed and "boom" in listed


def test_http_route_params_methods_and_queue_output_round_trip(host: RunningHost, azurite: Azurite) -> None:
    done = queue(azurite, "done")
    response = httpx.post(f"{host.url}/api/orders/7/rush", json={"qty": 2})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-order"] == "7"
    assert response.json() == {"id": 7, "note": "rush", "body": {"qty": 2}}
    assert httpx.post(f"{host.url}/api/orders/8", json={}).json()["note"] is None  # optional parameter
    assert httpx.get(f"{host.url}/api/orders/7").status_code == 404  # wrong method: 404, as the host answers
    assert httpx.post(f"{host.url}/api/orders/notanumber", json={}).status_code == 404  # :int constraint

    # The queue trigger consumed both (base64 in, base64 out): "done" holds base64 of "done:<id>".
    raw = collect(done, 2, 15)
    assert sorted(base64.b64decode(t).decode() for t in raw) == ["done:7", "done:8"]
    assert "order 7, dequeue count 1, function handle_order" in host.log()
    assert "Executed 'Functions.handle_order' (Succeeded, trigger=queueTrigger" in host.log()


def test_message_sent_by_another_client_is_decoded_from_base64(host: RunningHost, azurite: Azurite) -> None:
    done = queue(azurite, "done")
    queue(azurite, "orders").send_message(base64.b64encode(b'{"id": 42}').decode())
    raw = collect(done, 1, 15)
    assert [base64.b64decode(t) for t in raw] == [b"done:42"]


def test_undecodable_message_goes_to_poison(host: RunningHost, azurite: Azurite) -> None:
    poison = queue(azurite, "orders-poison")
    queue(azurite, "orders").send_message("this is not base64!")
    found = wait_for(lambda: take_all(poison), 15, "a message in 'orders-poison'")
    assert found == ["this is not base64!"]


def test_failing_function_ends_in_poison_queue(host: RunningHost, azurite: Azurite) -> None:
    text = base64.b64encode(b"bad order").decode()
    started = time.monotonic()
    queue(azurite, "broken").send_message(text)
    found = wait_for(lambda: take_all(queue(azurite, "broken-poison")), 20, "a message in 'broken-poison'")
    # maxDequeueCount 2 from host.json; the 1 s visibilityTimeout from the environment (host.json says 5 min).
    assert found == [text]
    assert time.monotonic() - started < 15
    log = host.log()
    assert "attempt 1" in log and "attempt 2" in log and "attempt 3" not in log
    assert "Moving message" in log and "'broken-poison'" in log
    assert take_all(queue(azurite, "broken")) == []


def test_http_failure_is_a_bare_500(host: RunningHost) -> None:
    response = httpx.get(f"{host.url}/api/boom")
    assert response.status_code == 500
    assert "secret" not in response.text
    assert "ValueError: secret detail" in host.log()  # the details are logged


def test_failed_output_write_answers_500(host: RunningHost) -> None:
    # Azurite refuses the queue name, so the output binding cannot be written: the caller must retry.
    response = httpx.post(f"{host.url}/api/unwritable")
    assert response.status_code == 500
    assert "Executed 'Functions.unwritable' (Failed" in host.log()


def test_local_settings_json_values_and_precedence(host: RunningHost) -> None:
    assert httpx.get(f"{host.url}/api/settings").json() == {"FROM_FILE": "file", "FROM_BOTH": "environment"}


def test_timer_fired_through_admin_api(host: RunningHost, azurite: Azurite) -> None:
    ticks = queue(azurite, "ticks")
    answer = httpx.post(f"{host.url}/admin/functions/tick?wait=true", json={"input": ""}, headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["status"] == "Succeeded"
    assert [base64.b64decode(t) for t in take_all(ticks)] == [b"tick past_due=False"]
    # Without ?wait the host answers 202 at once and runs the function in the background.
    assert httpx.post(f"{host.url}/admin/functions/TICK", json={"input": ""}, headers=ADMIN).status_code == 202
    assert wait_for(lambda: take_all(ticks), 10, "a second tick") == [base64.b64encode(b"tick past_due=False").decode()]


def test_admin_api_runs_a_queue_function_with_its_input(host: RunningHost, azurite: Azurite) -> None:
    done = queue(azurite, "done")
    answer = httpx.post(
        f"{host.url}/admin/functions/handle_order?wait=true", json={"input": '{"id": 99}'}, headers=ADMIN
    )
    assert answer.status_code == 200
    assert [base64.b64decode(t) for t in take_all(done)] == [b"done:99"]
    failed = httpx.post(f"{host.url}/admin/functions/always_fails?wait=true", json={"input": "x"}, headers=ADMIN)
    assert failed.status_code == 500 and failed.json()["status"] == "Failed"


SLOW_APP = """
    import asyncio
    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="slow")
    async def slow(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(1.5)
        return func.HttpResponse("finished")
"""


def test_sigterm_lets_the_invocation_in_flight_finish(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "app", SLOW_APP, {"version": "2.0"})
    ready = tmp_path / "ready.json"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    process = subprocess.Popen(devhost_command(app_dir, ready), env=env, stderr=subprocess.PIPE)
    wait_for(lambda: ready.exists() or process.poll() is not None, 20, "the ready file")
    url = json.loads(ready.read_text())["url"]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.get, f"{url}/api/slow", timeout=10)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        response = pending.result()
    _, stderr = process.communicate(timeout=15)
    assert (response.status_code, response.text) == (200, "finished")
    assert process.returncode == 0
    assert b"Dev host stopped" in stderr


def test_unresolved_setting_stops_startup_with_one_line(tmp_path: Path) -> None:
    source = """
        import azure.functions as func
        app = func.FunctionApp()

        @app.queue_trigger(arg_name="msg", queue_name="%MISSING_QUEUE%", connection="AzureWebJobsStorage")
        def f(msg: func.QueueMessage) -> None:
            pass
    """
    app_dir = write_app(tmp_path / "app", source, {"version": "2.0"})
    env = {k: v for k, v in os.environ.items() if k != "MISSING_QUEUE"}
    env["PYTHONPATH"] = str(PROJECT)
    result = subprocess.run(
        devhost_command(app_dir, tmp_path / "ready.json"),
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    # The app's own import-time log lines may come first; the error itself is one line, the last.
    lines = result.stderr.decode().strip().splitlines()
    errors = [line for line in lines if line.startswith("devhost: error:")]
    assert errors == lines[-1:], lines
    assert "'%MISSING_QUEUE%' does not resolve to a value" in errors[0]
    assert "function 'f'" in errors[0]
    assert not (tmp_path / "ready.json").exists()


def test_the_queue_lease_is_the_hosts_ten_minutes_unless_shortened_for_a_test():
    from datetime import timedelta

    from local.devhost.config import ConfigError
    from local.devhost.queue_trigger import receive_visibility

    assert receive_visibility({}) == timedelta(minutes=10)
    assert receive_visibility({"DEVHOST_QUEUE_LEASE_SECONDS": "15"}) == timedelta(seconds=15)
    for bad in ("1", "x", "-5", "1.5"):
        with pytest.raises(ConfigError, match="DEVHOST_QUEUE_LEASE_SECONDS"):
            receive_visibility({"DEVHOST_QUEUE_LEASE_SECONDS": bad})
