// Storage for the Functions host (queues, leases, timer state), the deployment package, and the app's blobs.
// Reached only with Entra ID: shared keys and anonymous blob access are off.
param name string
param location string
param tags object
param deploymentContainerName string
param attachmentsContainerName string
param stateContainerName string

// Regions where Standard general-purpose v2 accounts may be zone-redundant, from Microsoft's list ("Azure regions that
// support zone-redundant storage (ZRS)", learn.microsoft.com/azure/storage/common/redundancy-regions-zrs). Elsewhere
// (westus, northcentralus, westcentralus, ukwest, ... have no availability zones) Standard_ZRS fails with
// RedundancyConfigurationNotAvailableInRegion, so the account is locally redundant there. A region missing from this
// list gets LRS, which always deploys.
var zoneRedundantRegions = [
  'australiaeast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'chinanorth3'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'israelcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'mexicocentral'
  'northeurope'
  'norwayeast'
  'polandcentral'
  'qatarcentral'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'spaincentral'
  'swedencentral'
  'switzerlandnorth'
  'uaenorth'
  'uksouth'
  'usgovvirginia'
  'westeurope'
  'westus2'
  'westus3'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    // Zone-redundant where the region has zones: attachments are the product's output and the queues hold work not yet done.
    // checkov:skip=CKV_AZURE_206: geo-replication would copy mail content to a second region, which data residency may forbid
    name: contains(zoneRedundantRegions, toLower(location)) ? 'Standard_ZRS' : 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    // Flat namespace: blob index tags, which the app sets on every file and manifest, do not exist with a
    // hierarchical namespace (Data Lake Gen2).
    isHnsEnabled: false
    // Flex Consumption without VNet integration reaches storage over its public endpoint; every request needs a token.
    // checkov:skip=CKV_AZURE_59: no private network in this deployment; shared keys and anonymous access are off instead
    publicNetworkAccess: 'Enabled'
    // checkov:skip=CKV_AZURE_35: no private network in this deployment; every request needs an Entra token
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A deleted attachment or state record can be restored for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource attachmentsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: attachmentsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
