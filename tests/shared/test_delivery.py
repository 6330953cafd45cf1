"""GRAPH_DELIVERY and the Event Grid settings (shared/delivery.py), as parse_settings composes them."""

from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.settings import parse_settings

EVENTGRID = {
    "GRAPH_DELIVERY": "eventgrid",
    "EVENTGRID_AZURE_SUBSCRIPTION_ID": "8A8A8A8A-4B4B-4C4C-4D4D-12E12E12E12E",
    "EVENTGRID_RESOURCE_GROUP": "rg-mail",
    "EVENTGRID_LOCATION": "westeurope",
    "WEBSITE_SITE_NAME": "func-mail-abc",
}


def test_webhook_is_the_default(env):
    s = parse_settings(env)
    assert s.graph_delivery == "webhook" and s.eventgrid is None
    assert s.notification_url.startswith("https://")


def test_eventgrid_urls_name_the_partner_topic_for_both(env):
    s = parse_settings({**env, **EVENTGRID})
    expected = (
        "EventGrid:?azuresubscriptionid=8a8a8a8a-4b4b-4c4c-4d4d-12e12e12e12e&resourcegroup=rg-mail"
        "&partnertopic=func-mail-abc-mail&location=westeurope"
    )
    assert s.graph_delivery == "eventgrid"
    assert s.notification_url == expected and s.lifecycle_url == expected
    assert s.eventgrid is not None and s.eventgrid.queue == "mail-events"


def test_queue_and_topic_can_be_named(env):
    s = parse_settings({**env, **EVENTGRID, "EVENTGRID_QUEUE": "graph-events", "EVENTGRID_PARTNER_TOPIC": "Mail-1"})
    assert s.eventgrid is not None and (s.eventgrid.queue, s.eventgrid.partner_topic) == ("graph-events", "Mail-1")
    assert "partnertopic=Mail-1&" in s.notification_url


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("GRAPH_DELIVERY", "eventhub", "GRAPH_DELIVERY: must be webhook or eventgrid"),
        ("EVENTGRID_LOCATION", "West Europe", "EVENTGRID_LOCATION: must be a region's short name"),
        ("EVENTGRID_LOCATION", "", "EVENTGRID_LOCATION: required with GRAPH_DELIVERY=eventgrid"),
        ("EVENTGRID_AZURE_SUBSCRIPTION_ID", "not-a-guid", "EVENTGRID_AZURE_SUBSCRIPTION_ID: must be a GUID"),
        ("EVENTGRID_RESOURCE_GROUP", "rg.", "EVENTGRID_RESOURCE_GROUP: must be a resource group name"),
        ("EVENTGRID_PARTNER_TOPIC", "a_b", "EVENTGRID_PARTNER_TOPIC: must be 3 to 50"),
        ("EVENTGRID_QUEUE", "Mail_Events", "EVENTGRID_QUEUE: 'Mail_Events' is not a valid queue name"),
    ],
)
def test_a_broken_setting_names_itself_in_one_line(env, name, value, needle):
    with pytest.raises(SettingsError) as caught:
        parse_settings({**env, **EVENTGRID, name: value})
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_no_topic_without_a_site_name_or_the_setting(env):
    broken = {k: v for k, v in {**env, **EVENTGRID}.items() if k != "WEBSITE_SITE_NAME"}
    with pytest.raises(SettingsError, match="EVENTGRID_PARTNER_TOPIC: required"):
        parse_settings(broken)
