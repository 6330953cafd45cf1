// Data-plane roles for the person who runs the deployment (azd's AZURE_PRINCIPAL_ID), so that the commands the docs
// give them work: `az keyvault secret set` for IMAP and POP3 passwords, and `python -m shared.cli check | status |
// resync | replay-poison | unsubscribe | maintain`, which read and write the app's state blobs, queues and Key Vault
// secrets with the operator's own Entra ID sign-in. Control-plane roles (Owner, Contributor) give none of this.
// main.bicep calls this module only when principalId is set. Names come from guid() over scope, principal and role.
param principalId string
@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string
param storageAccountName string
param keyVaultName string
@description('Name of a Key Vault certificate the app signs in with; empty when it uses a client secret.')
param graphClientCertificateName string = ''

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  keyVaultCertificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Blob Data Contributor: status, resync and unsubscribe read, write and delete the folders' state records; the
// operator never needs the blob index tags (Owner) that the app itself writes.
resource operatorBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: principalType
  }
}

// Queue Data Contributor: resync enqueues mail, replay-poison reads, moves and deletes parked messages, and status
// and the operations guide's `az storage message peek` read the queues.
resource operatorQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: principalType
  }
}

// Secrets Officer: `az keyvault secret set` for each IMAP or POP3 account's password, and check and maintain, which
// read the app's secrets and may write the clientState key as the app does. Secrets User could not set a password.
resource operatorSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: principalId
    principalType: principalType
  }
}

// Certificates Officer: only when the app signs in with a Key Vault certificate, which the operator imports (setup).
resource operatorCertificates 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(graphClientCertificateName)) {
  name: guid(vault.id, principalId, roles.keyVaultCertificatesOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCertificatesOfficer)
    principalId: principalId
    principalType: principalType
  }
}
