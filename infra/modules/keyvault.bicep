// Key Vault in RBAC mode for the secrets the app reads (Graph client secret, webhook key) and writes
// (clientState key). Soft delete and purge protection keep a deleted secret recoverable.
param name string
param location string
param tags object
// Empty when the app signs in with a certificate: then no secret is stored.
@secure()
param graphClientSecret string
@secure()
param webhookFunctionKey string
// 'recover' when this environment's vault is soft-deleted (after `azd down`): purge protection keeps its name taken
// for 90 days, and recovering it brings back its secrets (the operator's IMAP passwords too). The preprovision hook
// looks for such a vault and sets KEY_VAULT_CREATE_MODE.
@allowed(['default', 'recover'])
param createMode string = 'default'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    createMode: createMode
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    // Flex Consumption without VNet integration resolves Key Vault references over the public endpoint.
    // checkov:skip=CKV_AZURE_189: no private network in this deployment; every call needs an Entra token and an RBAC role
    publicNetworkAccess: 'Enabled'
    // checkov:skip=CKV_AZURE_109: no private network in this deployment; the vault accepts only Entra tokens with an RBAC role
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Entra ID client secrets carry their own expiry, set where the secret is created; an expiry here would only
// make Key Vault refuse the reference while the credential is still valid.
resource graphSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(graphClientSecret)) {
  parent: vault
  name: 'graph-client-secret'
  // checkov:skip=CKV_AZURE_41: the client secret expires in Entra ID; an expiry here would cut off a valid credential
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov does not read the properties of a conditional resource
  properties: {
    value: graphClientSecret
    contentType: 'text/plain'
  }
}

// The webhook's host key: Graph calls the notification and lifecycle URLs with ?code=<this value>.
resource webhookKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'webhook-function-key'
  // checkov:skip=CKV_AZURE_41: rotating it means recreating every Graph subscription, so it is rotated on purpose
  properties: {
    value: webhookFunctionKey
    contentType: 'text/plain'
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
// Empty when no secret is stored (a certificate is the credential).
output graphClientSecretName string = empty(graphClientSecret) ? '' : 'graph-client-secret'
output webhookFunctionKeySecretName string = webhookKeySecret.name
