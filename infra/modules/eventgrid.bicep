// GRAPH_DELIVERY=eventgrid, what can exist before Graph does anything: Graph's authorization to create a partner
// topic in this resource group, the queue Event Grid delivers to and the container it dead-letters to, and the
// identity Event Grid delivers with, each of its roles at the narrowest scope. The partner topic itself comes
// from Graph with the first subscription; infra/eventgrid/connect.bicep (run by the postdeploy hook) then
// subscribes the queue to it.
param location string
param tags object
param storageAccountName string
param queueName string
param deadLetterContainerName string
param identityName string
@description('When this deployment runs; the authorization lasts from then.')
param deployedAt string = utcNow()
@minValue(1)
@maxValue(365)
@description('Days Graph may create partner topics here; every `azd provision` renews it (docs/setup.md).')
param authorizationDays int = 365

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

// The resource group's partner configuration, which Azure names `default`: partner MicrosoftGraphAPI may create
// partner topics in this group until the authorization expires ("any request from this partner to create,
// update or delete resources in subscriber's context will fail" after that).
resource partnerConfiguration 'Microsoft.EventGrid/partnerConfigurations@2025-02-15' = {
  name: 'default'
  location: 'global'
  tags: tags
  properties: {
    partnerAuthorization: {
      defaultMaximumExpirationTimeInDays: authorizationDays
      authorizedPartnersList: [
        {
          partnerName: 'MicrosoftGraphAPI'
          authorizationExpirationTimeInUtc: dateTimeAdd(deployedAt, 'P${authorizationDays}D')
        }
      ]
    }
  }
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

// Event Grid delivers as this identity (set on the partner topic by the hook): it may add messages to one queue
// and write blobs in one container, nothing else.
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

output identityId string = delivery.id
output authorizationExpires string = dateTimeAdd(deployedAt, 'P${authorizationDays}D')
