// Mail Attachment Ingest: everything `azd up` provisions, in one resource group.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Azure region of every resource; it must offer the Flex Consumption plan.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Directory (tenant) id of the app registration; empty means the tenant of the subscription.')
param graphTenantId string = ''

@description('Application (client) id of the app registration that reads the mailboxes; empty when MAILBOXES lists only IMAP or POP3 accounts with passwords.')
param graphClientId string = ''

@secure()
@description('Client secret of the app registration, stored in Key Vault, never in an app setting; empty when graphClientCertificateName names the credential.')
param graphClientSecret string = ''

@description('Name of a Key Vault certificate the app signs in with instead of the secret; empty for none.')
param graphClientCertificateName string = ''

@allowed(['application', 'delegated'])
@description('GRAPH_AUTH_MODE: application permissions (shared mailboxes too), or delegated (each owner consents).')
param graphAuthMode string = 'application'

@minLength(1)
@description('MAILBOXES setting: comma-separated `mailbox` or `mailbox/Folder/Sub folder`.')
param mailboxes string

@secure()
@minLength(32)
@description('Value of the webhook host key; the preprovision hook generates it once per environment.')
param webhookFunctionKey string

param attachmentsContainerName string = 'mail-attachments'
param stateContainerName string = 'mail-ingest-state'

@description('NCRONTAB schedule of the maintain timer (subscriptions, renewals, catch-up).')
param maintainSchedule string = '0 */15 * * * *'

@description('NCRONTAB schedule of the poll timer of IMAP and POP3 accounts in MAILBOXES.')
param mailPollSchedule string = '0 * * * * *'

@description('True when this environment\'s Function App exists (set by the preprovision hook): its current app settings are kept, with the azd environment\'s values over them.')
param functionAppExists bool = false

// Secure: a value is the operator's and stays out of the deployment's history, whatever it holds.
@secure()
@description('Base64 of a JSON object: every setting in infra/hooks/app-settings.txt that the azd environment sets (the preprovision hook makes it).')
param appSettingsFromAzd string = ''

@minValue(0)
@maxValue(10)
@description('Always-ready instances of the HTTP scale group, so that Graph never waits for a cold start.')
param httpAlwaysReady int = 1

// Flex Consumption's bounds for the largest scale-out (event-driven scaling, "Limit scale-out").
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Object id of the person (or CI principal) running azd; azd fills AZURE_PRINCIPAL_ID. It gets the data roles the operator commands need; empty grants nothing.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
@description('Kind of principalId: User for `azd auth login` as a person, ServicePrincipal in CI.')
param principalType string = 'User'

@allowed(['default', 'recover'])
@description('`recover` when this environment\'s Key Vault is soft-deleted after `azd down`; set by the preprovision hook.')
param keyVaultCreateMode string = 'default'

@description('E-mail address for the alerts; empty creates the alert rules without a notification.')
param alertEmail string = ''

@minValue(1)
@maxValue(48)
@description('Alert when a configured mailbox has had no accepted notification for this many hours.')
param notificationSilenceHours int = 24

@minValue(0)
@description('Alert when more function invocations than this fail within 15 minutes.')
param functionFailureThreshold int = 5

@allowed(['webhook', 'eventgrid'])
@description('GRAPH_DELIVERY: Graph calls the app\'s webhook, or publishes to an Event Grid partner topic that delivers to a queue.')
param graphDelivery string = 'webhook'

@description('EVENTGRID_QUEUE: the Storage queue Event Grid delivers Graph\'s events to.')
param eventGridQueue string = 'mail-events'

@description('EVENTGRID_PARTNER_TOPIC: the partner topic Graph creates and publishes to; empty: derived from the app\'s name.')
param eventGridPartnerTopic string = ''

@description('Microsoft Defender for Storage on-upload malware scanning of the app\'s storage account (MALWARE_SCANNING=defender): $0.15 per GB scanned plus the per-account plan (docs/setup.md).')
@allowed(['off', 'defender'])
param malwareScanning string = 'off'

// The app setting's own values (MALWARE_SCANNING), so the azd variable of the same name takes the same words.
var scanning = malwareScanning == 'defender'

@minValue(-1)
@description('Defender\'s capGBPerMonth: no scanning for the rest of a calendar month after this many GB; -1 is no cap.')
param malwareScanningCapGBPerMonth int = 100

@description('MALWARE_SCAN_QUEUE: the Storage queue Event Grid delivers Defender\'s scan results to.')
param malwareScanQueue string = 'scan-results'

@description('QUARANTINE_CONTAINER: where the app moves a file Defender found malicious.')
param quarantineContainerName string = 'quarantine'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var tenantId = empty(graphTenantId) ? tenant().tenantId : graphTenantId
var appName = '${abbrs.webSitesFunctions}${resourceToken}'
var eventGrid = graphDelivery == 'eventgrid'
// EVENTGRID_PARTNER_TOPIC: Graph creates it with the first subscription; names are unique per region.
var partnerTopicName = empty(eventGridPartnerTopic) ? '${appName}-mail' : eventGridPartnerTopic
var deadLetterContainerName = '${eventGridQueue}-deadletter'
var scanDeadLetterContainerName = '${malwareScanQueue}-deadletter'
var deploymentContainerName = 'app-package-${take(appName, 32)}-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-07-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    attachmentsContainerName: attachmentsContainerName
    stateContainerName: stateContainerName
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    graphClientSecret: graphClientSecret
    webhookFunctionKey: webhookFunctionKey
    createMode: keyVaultCreateMode
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    graphClientCertificateName: graphClientCertificateName
  }
}

// The deploying user's own data-plane access, for `az keyvault secret set` and `python -m shared.cli ...`: the vault
// and storage accept Entra ID with an RBAC role only, which an Owner of the subscription does not have by being Owner.
module operatorAccess 'modules/operator.bicep' = if (!empty(principalId)) {
  name: 'operator'
  scope: rg
  params: {
    principalId: principalId
    principalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    graphClientCertificateName: graphClientCertificateName
  }
}

module eventGridAccess 'modules/eventgrid.bicep' = if (eventGrid) {
  name: 'eventgrid'
  scope: rg
  params: {
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    queueName: eventGridQueue
    deadLetterContainerName: deadLetterContainerName
    identityName: '${abbrs.managedIdentityUserAssignedIdentities}eg-${resourceToken}'
  }
}

module malwareScan 'modules/defender.bicep' = if (scanning) {
  name: 'defender'
  scope: rg
  params: {
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    topicName: '${abbrs.eventGridDomainsTopics}scan-${resourceToken}'
    identityName: '${abbrs.managedIdentityUserAssignedIdentities}scan-${resourceToken}'
    queueName: malwareScanQueue
    deadLetterContainerName: scanDeadLetterContainerName
    quarantineContainerName: quarantineContainerName
    unscannedContainerNames: [
      stateContainerName
      deploymentContainerName
    ]
    capGBPerMonth: malwareScanningCapGBPerMonth
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    planName: '${abbrs.webServerFarms}${resourceToken}'
    appName: appName
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    keyVaultUri: keyVault.outputs.uri
    graphClientSecretName: keyVault.outputs.graphClientSecretName
    webhookFunctionKeySecretName: keyVault.outputs.webhookFunctionKeySecretName
    graphTenantId: tenantId
    graphClientId: graphClientId
    graphClientCertificateName: graphClientCertificateName
    graphAuthMode: graphAuthMode
    mailboxes: mailboxes
    attachmentsContainerName: attachmentsContainerName
    stateContainerName: stateContainerName
    maintainSchedule: maintainSchedule
    mailPollSchedule: mailPollSchedule
    keepAppSettings: functionAppExists
    appSettingsFromAzd: empty(appSettingsFromAzd) ? {} : json(base64ToString(appSettingsFromAzd))
    httpAlwaysReady: httpAlwaysReady
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    graphDelivery: graphDelivery
    eventGridQueue: eventGridQueue
    eventGridPartnerTopic: partnerTopicName
    eventGridResourceGroup: rg.name
    malwareScanning: scanning
    malwareScanQueue: malwareScanQueue
    quarantineContainerName: quarantineContainerName
  }
  // The app starts with its roles in place: storage, Key Vault references and telemetry work from the first run.
  dependsOn: [
    roles
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    ruleNamePrefix: '${abbrs.insightsScheduledQueryRules}${resourceToken}-'
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertEmail: alertEmail
    mailboxes: mailboxes
    notificationSilenceHours: notificationSilenceHours
    functionFailureThreshold: functionFailureThreshold
    malwareScanning: scanning
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    graphDelivery: graphDelivery
    malwareScanning: scanning
  }
}

// azd stores these in the environment; the postprovision hook prints the manual steps from them. No secrets.
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output GRAPH_TENANT_ID string = tenantId
output GRAPH_CLIENT_ID string = graphClientId
output MAILBOXES string = mailboxes
output WEBHOOK_BASE_URL string = 'https://${functionApp.outputs.defaultHostName}'
output KEY_VAULT_URL string = keyVault.outputs.uri
output ATTACHMENTS_CONTAINER string = attachmentsContainerName
// The workbook in the Azure portal; the postprovision hook prints it.
output AZURE_WORKBOOK_URL string = 'https://portal.azure.com/#@${tenant().tenantId}/resource${workbook.outputs.id}/workbook'
// GRAPH_DELIVERY=eventgrid: what infra/hooks/eventgrid.sh needs to connect the partner topic to the queue.
output GRAPH_DELIVERY string = graphDelivery
output EVENTGRID_QUEUE string = eventGridQueue
output EVENTGRID_PARTNER_TOPIC string = partnerTopicName
output EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainerName
output EVENTGRID_DELIVERY_IDENTITY_ID string = eventGrid ? eventGridAccess!.outputs.identityId : ''
// MALWARE_SCANNING=defender: where Defender's verdicts go (docs/setup.md, "Malware scanning (optional)").
output MALWARE_SCAN_QUEUE string = malwareScanQueue
output MALWARE_SCAN_TOPIC_ID string = scanning ? malwareScan!.outputs.topicId : ''
output MALWARE_SCAN_DEADLETTER_CONTAINER string = scanning ? scanDeadLetterContainerName : ''
