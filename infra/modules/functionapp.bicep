// The Function App on the Flex Consumption plan (Linux, Python 3.11), running as the user-assigned identity.
param planName string
param appName string
param location string
param tags object
param identityId string
param identityClientId string
param storageBlobEndpoint string
param storageQueueEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string
param keyVaultName string
param keyVaultUri string
// Empty when the credential is a certificate: GRAPH_CLIENT_SECRET is then left empty.
param graphClientSecretName string
param webhookFunctionKeySecretName string
param graphTenantId string
param graphClientId string
param graphClientCertificateName string
@allowed(['application', 'delegated'])
param graphAuthMode string
param mailboxes string
param attachmentsContainerName string
param stateContainerName string
param maintainSchedule string
param mailPollSchedule string
// True when the app exists already (the preprovision hook looked): its current settings are read and kept.
param keepAppSettings bool
// Every other setting the app reads that the azd environment sets (infra/hooks/app-settings.txt), by name.
param appSettingsFromAzd object
@minValue(0)
param httpAlwaysReady int
// Flex Consumption's bounds (event-driven scaling, "Limit scale-out"): the platform refuses a maximum below 40.
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int
param instanceMemoryMB int
@allowed(['webhook', 'eventgrid'])
param graphDelivery string
param eventGridQueue string
param eventGridPartnerTopic string
param eventGridResourceGroup string
// MALWARE_SCANNING=defender: infra/modules/defender.bicep made the queue and the quarantine container.
param malwareScanning bool
param malwareScanQueue string
param quarantineContainerName string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  // checkov:skip=CKV_AZURE_225: Flex Consumption has zone redundancy in a few regions only; the region is chosen at deployment
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // checkov:skip=CKV_AZURE_17: Graph presents no client certificate to webhooks; the host key guards them
    // Key Vault references in app settings resolve with this identity, not a system-assigned one.
    keyVaultReferenceIdentity: identityId
    // Microsoft Graph delivers change notifications from the internet.
    // checkov:skip=CKV_AZURE_222: the webhook is public by design; it checks the host key and each clientState
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // checkov:skip=CKV_AZURE_213: Flex Consumption replaces failed instances itself; the alert rules watch failures
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        // checkov:skip=CKV_AZURE_212: Flex Consumption scales out on demand; the HTTP group keeps always-ready instances
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // All HTTP functions form the 'http' scale group: a warm instance answers Graph's validation handshake
        // (10 s) and notifications (3 s) without a cold start.
        alwaysReady: [
          {
            name: 'http'
            instanceCount: httpAlwaysReady
          }
        ]
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Defaults of the settings the template does not own; the app's or the azd environment's value replaces them.
var defaultSettings = {
  MAINTAIN_SCHEDULE: maintainSchedule
  MAIL_POLL_SCHEDULE: mailPollSchedule
}

// The settings the template owns (shared/settings.py's contract): identity, storage, telemetry, the app registration,
// secrets as Key Vault references resolved by the identity; each comes from a parameter on every provision.
var ownedSettings = {
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // host.json telemetryMode OpenTelemetry. The app configures the exporter itself on first use (shared/ops/telemetry.py);
  // 'true' would have the Python worker configure it at start, which a cold start pays before Graph's handshake.
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'false'
  // The worker passes the host's trace context (traceparent) into each invocation only with this on, so the app's
  // log lines carry the invocation's operation id; it also stops the host forwarding the worker's lines a second time.
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  AZURE_CLIENT_ID: identityClientId
  GRAPH_TENANT_ID: graphTenantId
  GRAPH_CLIENT_ID: graphClientId
  GRAPH_CLIENT_SECRET: empty(graphClientSecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${graphClientSecretName})'
  GRAPH_CLIENT_CERTIFICATE: graphClientCertificateName
  GRAPH_AUTH_MODE: graphAuthMode
  MAILBOXES: mailboxes
  WEBHOOK_BASE_URL: 'https://${site.properties.defaultHostName}'
  WEBHOOK_FUNCTION_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${webhookFunctionKeySecretName})'
  KEY_VAULT_URL: keyVaultUri
  ATTACHMENTS_CONTAINER: attachmentsContainerName
  STATE_CONTAINER: stateContainerName
  // Graph's delivery channel, and with Event Grid the partner topic the notification URL names (shared/delivery.py).
  GRAPH_DELIVERY: graphDelivery
  EVENTGRID_QUEUE: eventGridQueue
  EVENTGRID_PARTNER_TOPIC: eventGridPartnerTopic
  EVENTGRID_AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
  EVENTGRID_RESOURCE_GROUP: eventGridResourceGroup
  EVENTGRID_LOCATION: location
  // Defender's verdicts before hand-off: the queue Event Grid delivers them to, and where a malicious file goes.
  MALWARE_SCANNING: malwareScanning ? 'defender' : 'off'
  MALWARE_SCAN_QUEUE: malwareScanQueue
  QUARANTINE_CONTAINER: quarantineContainerName
}

// What the app has now, on a re-provision: a setting changed in the portal stays (docs/setup.md, "Settings").
resource currentSettings 'Microsoft.Web/sites/config@2024-04-01' existing = {
  parent: site
  name: 'appsettings'
}

// A separate resource so that WEBHOOK_BASE_URL can use the host name the site was given. The rule, later wins:
// the template's defaults, the app's current settings, the azd environment's (appSettingsFromAzd), the owned ones.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // Checks written for a site's web configuration match any sites/config resource; this one holds app settings.
  // checkov:skip=CKV_AZURE_13: app settings only; the web configuration (siteConfig) is on the site
  // checkov:skip=CKV_AZURE_63: app settings only; the web configuration (siteConfig) is on the site
  parent: site
  // checkov:skip=CKV_AZURE_65: app settings only; the web configuration (siteConfig) is on the site
  // checkov:skip=CKV_AZURE_66: app settings only; the web configuration (siteConfig) is on the site
  // checkov:skip=CKV_AZURE_80: app settings only; the web configuration (siteConfig) is on the site
  name: 'appsettings'
  // checkov:skip=CKV_AZURE_88: app settings only; the web configuration (siteConfig) is on the site
  // checkov:skip=CKV_AZURE_222: app settings only; the web configuration (siteConfig) is on the site
  properties: union(
    defaultSettings,
    keepAppSettings ? currentSettings.list().properties : {},
    appSettingsFromAzd,
    ownedSettings
  )
}

// No host key here: a sites/host/functionKeys PUT goes through the Functions host, which is not running before the
// code is deployed (BadRequest or InternalServerError on Flex). The postdeploy hook sets graphwebhook instead.

// Deployments go through Entra ID (azd, Azure CLI); FTP and basic-auth publishing stay off.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
