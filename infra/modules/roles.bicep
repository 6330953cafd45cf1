// Role assignments for the app's managed identity: the least built-in roles that work, each at the narrowest
// scope the app needs. Names come from guid() over scope, principal and role, so a redeployment is idempotent.
param principalId string
param storageAccountName string
param keyVaultName string
param applicationInsightsName string
@description('Name of a Key Vault certificate the app signs in with; empty when it uses a client secret.')
param graphClientCertificateName string = ''

// Built-in role definition ids (they are the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  keyVaultCertificateUser: 'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Blob Data Owner: the role Functions documents for identity-based AzureWebJobsStorage (host leases, timer
// schedule, keys) and for the Flex deployment container; it also covers the app's attachment and state blobs
// and the blob index tags written with every file and manifest (blobs/tags/write, which Blob Data Contributor
// lacks). Owner is needed anyway, so tagging adds no role; a custom tags/write role would only repeat it.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Queue Data Contributor: the queue trigger reads and deletes messages, the output bindings add them, and the
// host creates the poison queues; the narrower Message Processor and Sender roles cannot create a queue.
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Secrets Officer: the app writes secrets (the clientState key) as well as reading them and its Key Vault
// references; Secrets User would be read-only.
resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Certificate User: only when the app signs in to Graph with a Key Vault certificate, which it reads.
resource certificateUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(graphClientCertificateName)) {
  name: guid(vault.id, principalId, roles.keyVaultCertificateUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCertificateUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher: Application Insights accepts only Entra-authenticated telemetry (local auth off).
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
