// GRAPH_DELIVERY=eventgrid, once Graph has created the partner topic (the first subscription does): the event
// subscription that delivers Graph's events to the app's queue, as the delivery identity, in the CloudEvents 1.0
// schema, with Event Grid's longest retry (24 hours, 30 attempts) and dead-lettering to a blob container.
// Deployed by infra/hooks/eventgrid.sh after it has set that identity on the topic and activated it.
param partnerTopicName string
param storageAccountName string
param queueName string
param deadLetterContainerName string
param deliveryIdentityId string

resource topic 'Microsoft.EventGrid/partnerTopics@2025-02-15' existing = {
  name: partnerTopicName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource toQueue 'Microsoft.EventGrid/partnerTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'mail-events-queue'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    // No event type filter: the topic carries only this app's subscriptions' events, and the docs name no type
    // for removed or missed subscriptions (shared/sources/graph/eventgrid.py); the app checks every event.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deliveryWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: deliveryIdentityId
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storage.id
          queueName: queueName
          // Kept until the app takes it: Event Grid's own default is 7 days.
          queueMessageTimeToLiveInSeconds: -1
        }
      }
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: deliveryIdentityId
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}
