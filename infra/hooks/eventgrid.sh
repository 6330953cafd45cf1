#!/bin/sh
# GRAPH_DELIVERY=eventgrid, after the maintain pass has made the first subscription (postdeploy.sh calls this):
# Graph has then created the partner topic EVENTGRID_PARTNER_TOPIC in this resource group, or will shortly (it is
# eventually consistent: this waits for it). Then: Event Grid's delivery identity on the topic, the topic
# activated (events flow only then), and the event subscription to the app's queue (infra/eventgrid/connect.bicep).
# Idempotent: run it again with `azd hooks run postdeploy`, or by itself with `sh infra/hooks/eventgrid.sh`.
set -eu

group="${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set}"
topic="${EVENTGRID_PARTNER_TOPIC:?EVENTGRID_PARTNER_TOPIC is not set}"
identity="${EVENTGRID_DELIVERY_IDENTITY_ID:?EVENTGRID_DELIVERY_IDENTITY_ID is not set}"
storage="${AZURE_STORAGE_ACCOUNT_NAME:?AZURE_STORAGE_ACCOUNT_NAME is not set}"
queue="${EVENTGRID_QUEUE:-mail-events}"
dead_letters="${EVENTGRID_DEADLETTER_CONTAINER:-$queue-deadletter}"
wait_seconds="${EVENTGRID_TOPIC_WAIT_SECONDS:-600}"
api="2025-02-15"
here=$(dirname "$0")

manual() {
  echo "To finish by hand once the partner topic exists (docs/setup.md, Event Grid):"
  echo "  az eventgrid partner topic activate -g $group -n $topic"
  echo "  az deployment group create -g $group --template-file infra/eventgrid/connect.bicep \\"
  echo "    --parameters partnerTopicName=$topic storageAccountName=$storage queueName=$queue \\"
  echo "    deadLetterContainerName=$dead_letters deliveryIdentityId=$identity"
}

deadline=$(( $(date +%s) + wait_seconds ))
until topic_id=$(az eventgrid partner topic show -g "$group" -n "$topic" --query id -o tsv 2>/dev/null) \
  && [ -n "$topic_id" ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "Partner topic $topic did not appear within ${wait_seconds}s: Graph creates it with the first"
    echo "subscription (check the maintain pass above, and that the partner configuration authorizes MicrosoftGraphAPI)."
    manual
    exit 1
  fi
  sleep 15
done
echo "Partner topic $topic exists."

# The topic delivers as the identity infra/modules/eventgrid.bicep made (queue sender, dead-letter writer only).
az rest --method patch --url "https://management.azure.com${topic_id}?api-version=$api" \
  --body "{\"identity\":{\"type\":\"UserAssigned\",\"userAssignedIdentities\":{\"$identity\":{}}}}" >/dev/null \
  || { echo "Could not set the delivery identity on $topic."; manual; exit 1; }
az eventgrid partner topic activate -g "$group" -n "$topic" >/dev/null \
  || { echo "Could not activate $topic."; manual; exit 1; }
echo "Partner topic $topic activated."
az deployment group create -g "$group" --name eventgrid-connect --template-file "$here/../eventgrid/connect.bicep" \
  --parameters partnerTopicName="$topic" storageAccountName="$storage" queueName="$queue" \
  deadLetterContainerName="$dead_letters" deliveryIdentityId="$identity" >/dev/null \
  || { echo "Could not create the event subscription of $topic."; manual; exit 1; }
echo "Event subscription mail-events-queue delivers $topic to queue $queue (dead letters: $dead_letters)."
