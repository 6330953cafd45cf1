"""`check`'s verdicts on the Azure side of Event Grid, from ARM's answers (Event Grid REST API 2025-02-15 shapes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.delivery import EventGridTarget
from shared.ops import eventgrid_azure as eg

TARGET = EventGridTarget("mail-events", "func-a-mail", "8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b", "rg-mail", "westeurope")
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def configuration(*partners: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {"partnerAuthorization": {"authorizedPartnersList": list(partners)}}}


def test_authorization_until_a_time_ahead_holds_seven_fraction_digits_read():
    config = configuration(
        {"partnerName": "Auth0", "authorizationExpirationTimeInUtc": "2027-01-01T00:00:00Z"},
        {"partnerName": "MicrosoftGraphAPI", "authorizationExpirationTimeInUtc": "2026-03-31T12:00:00.1234567Z"},
    )
    assert eg.authorization_verdict(config, TARGET, NOW) == (
        "MicrosoftGraphAPI authorized until 2026-03-31 12:00 UTC (30 days)"
    )


@pytest.mark.parametrize(
    ("config", "wrong"),
    [
        (None, "no partner configuration in resource group rg-mail"),
        (configuration({"partnerName": "Auth0"}), "does not authorize MicrosoftGraphAPI"),
        (
            configuration(
                {"partnerName": "MicrosoftGraphAPI", "authorizationExpirationTimeInUtc": "2026-03-01T11:59Z"}
            ),
            "MicrosoftGraphAPI's authorization expired 2026-03-01 11:59 UTC",
        ),
        (configuration({"partnerName": "MicrosoftGraphAPI"}), "no readable expiration time"),
    ],
)
def test_authorization_missing_or_expired_says_what(config: dict[str, Any] | None, wrong: str):
    with pytest.raises(ValueError, match=wrong):
        eg.authorization_verdict(config, TARGET, NOW)


def test_the_authorize_command_names_the_group_and_the_partner():
    assert eg.authorize_command(TARGET) == (
        "az eventgrid partner configuration authorize --subscription 8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b "
        "--resource-group rg-mail --partner-name MicrosoftGraphAPI"
    )


@pytest.mark.parametrize(
    ("topic", "verdict"),
    [
        ({"properties": {"activationState": "Activated"}}, "activated"),
        ({"properties": {"activationState": "NeverActivated"}}, "is NeverActivated"),
        ({"properties": {"activationState": "Deactivated"}}, "is Deactivated"),
        (None, "no partner topic func-a-mail in resource group rg-mail"),
    ],
)
def test_activation(topic: dict[str, Any] | None, verdict: str):
    if verdict == "activated":
        assert eg.activation_verdict(topic, TARGET) == "partner topic func-a-mail activated"
    else:
        with pytest.raises(ValueError, match=verdict):
            eg.activation_verdict(topic, TARGET)
    assert eg.activate_command(TARGET).endswith("--resource-group rg-mail --name func-a-mail")


def queue_subscription(queue: str, identity: bool, state: str = "Succeeded") -> dict[str, Any]:
    destination = {"endpointType": "StorageQueue", "properties": {"resourceId": "/subscriptions/x", "queueName": queue}}
    where = {"deliveryWithResourceIdentity": {"destination": destination}} if identity else {"destination": destination}
    return {"name": "mail-events-queue", "properties": {"provisioningState": state, **where}}


def test_an_event_subscription_to_the_queue_with_or_without_an_identity():
    for identity in (True, False):
        listing = {"value": [queue_subscription("other", identity), queue_subscription("mail-events", identity)]}
        assert (
            eg.subscription_verdict(listing, TARGET)
            == "event subscription mail-events-queue delivers to queue mail-events"
        )
    with pytest.raises(ValueError, match="no event subscription of partner topic func-a-mail"):
        eg.subscription_verdict({"value": [queue_subscription("other", True)]}, TARGET)
    with pytest.raises(ValueError, match="is Failed"):
        eg.subscription_verdict({"value": [queue_subscription("mail-events", True, "Failed")]}, TARGET)
    with pytest.raises(ValueError, match="no event subscription"):
        eg.subscription_verdict(None, TARGET)
