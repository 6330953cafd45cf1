# GRAPH_DELIVERY=eventgrid, after the maintain pass has made the first subscription (postdeploy.ps1 calls this); as
# eventgrid.sh: wait for the partner topic Graph creates, set Event Grid's delivery identity on it, activate it, and
# deploy infra/eventgrid/connect.bicep (the event subscription to the app's queue). Idempotent.
$ErrorActionPreference = 'Stop'

$group = $env:AZURE_RESOURCE_GROUP
$topic = $env:EVENTGRID_PARTNER_TOPIC
$identity = $env:EVENTGRID_DELIVERY_IDENTITY_ID
$storage = $env:AZURE_STORAGE_ACCOUNT_NAME
foreach ($name in 'AZURE_RESOURCE_GROUP', 'EVENTGRID_PARTNER_TOPIC', 'EVENTGRID_DELIVERY_IDENTITY_ID', 'AZURE_STORAGE_ACCOUNT_NAME') {
  if (-not [Environment]::GetEnvironmentVariable($name)) { Write-Host "$name is not set"; exit 1 }
}
$queue = if ($env:EVENTGRID_QUEUE) { $env:EVENTGRID_QUEUE } else { 'mail-events' }
$deadLetters = if ($env:EVENTGRID_DEADLETTER_CONTAINER) { $env:EVENTGRID_DEADLETTER_CONTAINER } else { "$queue-deadletter" }
$waitSeconds = if ($env:EVENTGRID_TOPIC_WAIT_SECONDS) { [int]$env:EVENTGRID_TOPIC_WAIT_SECONDS } else { 600 }
$api = '2025-02-15'
$template = Join-Path $PSScriptRoot '../eventgrid/connect.bicep'

function Show-Manual {
  Write-Host 'To finish by hand once the partner topic exists (docs/setup.md, Event Grid):'
  Write-Host "  az eventgrid partner topic activate -g $group -n $topic"
  Write-Host "  az deployment group create -g $group --template-file infra/eventgrid/connect.bicep --parameters partnerTopicName=$topic storageAccountName=$storage queueName=$queue deadLetterContainerName=$deadLetters deliveryIdentityId=$identity"
}

$deadline = (Get-Date).AddSeconds($waitSeconds)
while (-not ($topicId = az eventgrid partner topic show -g $group -n $topic --query id -o tsv 2>$null)) {
  if ((Get-Date) -ge $deadline) {
    Write-Host "Partner topic $topic did not appear within ${waitSeconds}s: Graph creates it with the first subscription."
    Show-Manual
    exit 1
  }
  Start-Sleep -Seconds 15
}
Write-Host "Partner topic $topic exists."

$body = @{ identity = @{ type = 'UserAssigned'; userAssignedIdentities = @{ $identity = @{} } } } | ConvertTo-Json -Depth 5 -Compress
az rest --method patch --url "https://management.azure.com${topicId}?api-version=$api" --body $body | Out-Null
if ($LASTEXITCODE) { Write-Host "Could not set the delivery identity on $topic."; Show-Manual; exit 1 }
az eventgrid partner topic activate -g $group -n $topic | Out-Null
if ($LASTEXITCODE) { Write-Host "Could not activate $topic."; Show-Manual; exit 1 }
Write-Host "Partner topic $topic activated."
az deployment group create -g $group --name eventgrid-connect --template-file $template --parameters `
  partnerTopicName=$topic storageAccountName=$storage queueName=$queue deadLetterContainerName=$deadLetters `
  deliveryIdentityId=$identity | Out-Null
if ($LASTEXITCODE) { Write-Host "Could not create the event subscription of $topic."; Show-Manual; exit 1 }
Write-Host "Event subscription mail-events-queue delivers $topic to queue $queue (dead letters: $deadLetters)."
