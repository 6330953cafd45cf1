// The one identity the app uses for storage, Key Vault, Application Insights and the deployment package.
// User-assigned, so its roles exist before the Function App starts and resolves its Key Vault references.
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
