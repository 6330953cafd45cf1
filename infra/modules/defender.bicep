// MALWARE_SCANNING=defender (parameter malwareScanning): Microsoft Defender for Storage scans every blob written to
// the app's storage account on upload, writes the verdict as blob index tags and publishes it to an Event Grid custom
// topic, whose event subscription delivers it to the app's Storage queue (the app keeps one trigger kind).
// docs/setup.md, "Malware scanning (optional)", has the cost and the limits.
//
// Defender's per-account setting is enough: overrideSubscriptionLevelSettings turns the Defender for Storage plan on
// for this account alone (billed per account), with no Microsoft.Security/pricings at subscription scope.
// Defender publishes to the topic as a Microsoft service: Microsoft's own templates (Azure TRE's scan-result topic)
// give it no role and keep the topic's local (key) authentication off; Microsoft documents that the topic must be in
// the account's region and reachable over its public endpoint.
param location string
param tags object
param storageAccountName string
param topicName string
param identityName string
param queueName string
param deadLetterContainerName string
param quarantineContainerName string
@description('Containers of the account that hold no mail content (app state, the deployment package): not scanned.')
param unscannedContainerNames array
@minValue(-1)
@description('Defender\'s capGBPerMonth: scanning stops for the rest of the calendar month after this many GB; -1 is no cap.')
param capGBPerMonth int

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: queueName
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Where the app moves a file Defender found malicious (QUARANTINE_CONTAINER).
resource quarantine 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: quarantineContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Event Grid delivers the verdicts as this identity: it may add messages to one queue and write blobs in one
// container, nothing else (the pattern of modules/eventgrid.bicep, with an identity of its own).
resource delivery 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

// Queue Data Message Sender, on the one queue: Event Grid only adds messages; it reads and deletes none.
resource queueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, delivery.id, roles.storageQueueDataMessageSender)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: delivery.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Blob Data Contributor, on the dead-letter container only: Event Grid writes a blob per dead-lettered batch.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, delivery.id, roles.storageBlobDataContributor)
  scope: deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: delivery.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The custom topic Defender publishes each scan result to (Event Grid event schema). An event subscription that
// delivers with a user-assigned identity needs that identity on its topic.
resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: topicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${delivery.id}': {}
    }
  }
  properties: {
    inputSchema: 'EventGridSchema'
    // Defender publishes without a key; nobody else may publish with one.
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    // checkov:skip=CKV_AZURE_193: Defender for Storage cannot publish scan results to a topic without public network access (Microsoft's limitation)
    publicNetworkAccess: 'Enabled'
  }
}

// Every verdict to the app's queue, with Event Grid's longest retry (24 hours, 30 attempts), then dead-lettered.
resource toQueue 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'scan-results-queue'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Security.MalwareScanningResult'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deliveryWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: delivery.id
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
        userAssignedIdentity: delivery.id
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
  // Event Grid checks its identity's access when the subscription is created.
  dependsOn: [
    queueSender
    deadLetterWriter
  ]
}

// Defender for Storage on the account ('current' is the only name the setting takes), after the topic it publishes
// to exists and is subscribed, so that no verdict is published before the queue receives them.
resource defender 'Microsoft.Security/defenderForStorageSettings@2025-06-01' = {
  name: 'current'
  scope: storage
  properties: {
    isEnabled: true
    malwareScanning: {
      onUpload: {
        isEnabled: true
        capGBPerMonth: capGBPerMonth
        // Only mail content is scanned (and billed): not the app's state, the package, the host's own blobs, nor the
        // quarantined and dead-lettered blobs, which already have their verdict. Routes may write to any other
        // container, so the filter excludes rather than lists. A trailing '/' keeps 'x-state' from excluding 'x-state2'.
        filters: {
          excludeBlobsWithPrefix: [for name in concat(unscannedContainerNames, [
            'azure-webjobs-hosts'
            'azure-webjobs-secrets'
            quarantineContainerName
            deadLetterContainerName
          ]): '${name}/']
        }
      }
      scanResultsEventGridTopicResourceId: topic.id
      // The verdict also as blob index tags on each file (Microsoft's default, stated so that it stays on).
      blobScanResultsOptions: 'blobIndexTags'
    }
    // Sensitive-data threat detection is no part of a verdict; it stays off.
    sensitiveDataDiscovery: {
      isEnabled: false
    }
    // Required for a per-account custom topic (Microsoft: "set Override ... to On"); it also keeps a
    // subscription-level Defender policy from replacing this account's settings.
    overrideSubscriptionLevelSettings: true
  }
  dependsOn: [
    toQueue
  ]
}

output topicId string = topic.id
output identityId string = delivery.id
