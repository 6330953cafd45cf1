// The operator's picture: an Azure Monitor workbook on Application Insights, per mailbox folder and account (mails
// and files per hour, lag, failures, poison queues, Event Grid's parked and dead-lettered events, subscription
// expiry, last poll). Its queries are the operations guide's, word for word (tests/infra/test_kql.py checks both,
// and that each parses against the tables).
param location string
param tags object
param applicationInsightsId string
param displayName string = 'Mail Attachment Ingest'
@allowed(['webhook', 'eventgrid'])
@description('GRAPH_DELIVERY: the Event Grid chart shows with eventgrid only (the workbook\'s hidden GraphDelivery).')
param graphDelivery string = 'webhook'
@description('MALWARE_SCANNING on: the malware verdicts chart shows (the workbook\'s hidden MalwareScanning).')
param malwareScanning bool = false

// The gallery's copy opens on this Application Insights resource.
var content = replace(loadTextContent('../workbook/mail-ingest.workbook.json'), '__APPLICATION_INSIGHTS_ID__', toLower(applicationInsightsId))

// A shared workbook's name must be a GUID; one per resource group keeps a re-provision in place.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'mail-attachment-ingest-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: toLower(applicationInsightsId)
    version: 'Notebook/1.0'
    serializedData: replace(replace(content, '__GRAPH_DELIVERY__', graphDelivery), '__MALWARE_SCANNING__', malwareScanning ? 'defender' : 'off')
  }
}

output id string = workbook.id
