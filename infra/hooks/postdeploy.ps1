# After deploying: run one maintain pass in the deployed app now, so its mailboxes are subscribed within a
# minute instead of at the timer's first occurrence (postdeploy.sh explains why through the admin endpoint).
# Prints what the pass did, one line per mailbox folder, from GET /api/health; exits 1 if a folder failed.
# First it sets the webhook's host key graphwebhook with the Azure CLI, once the host is known to run (postdeploy.sh).
# FUNCTION_APP_URL and FUNCTION_APP_MASTER_KEY, when set, stand in for what the Azure CLI would look up.
$ErrorActionPreference = 'Stop'

$url = if ($env:FUNCTION_APP_URL) { $env:FUNCTION_APP_URL } else { $env:WEBHOOK_BASE_URL }
$key = $env:FUNCTION_APP_MASTER_KEY
$waitSeconds = if ($env:MAINTAIN_WAIT_SECONDS) { [int]$env:MAINTAIN_WAIT_SECONDS } else { 120 }
$app = $env:AZURE_FUNCTION_APP_NAME
$group = $env:AZURE_RESOURCE_GROUP

function Write-Manual {
  Write-Host 'To finish by hand once the app is up:'
  if ($env:WEBHOOK_FUNCTION_KEY) {
    $g = if ($group) { $group } else { '<resource group>' }
    $a = if ($app) { $app } else { '<function app>' }
    Write-Host "  az functionapp keys set -g $g -n $a --key-type functionKeys --key-name graphwebhook --key-value `"`$(azd env get-value WEBHOOK_FUNCTION_KEY)`""
  }
  Write-Host '  then run one maintain pass: Azure portal > Function App > Functions > maintain > Test/Run,'
  Write-Host "  or 'azd hooks run postdeploy' again. The timer runs it within 15 minutes anyway."
}

if (-not $url) { Write-Host "WEBHOOK_BASE_URL (the app's https://host) is not set"; Write-Manual; exit 1 }
if (-not $key -or $env:WEBHOOK_FUNCTION_KEY) {
  if (-not (Get-Command az -ErrorAction SilentlyContinue) -or -not $app -or -not $group) {
    Write-Host "Not subscribed yet: the Azure CLI (az) and this environment's AZURE_FUNCTION_APP_NAME and AZURE_RESOURCE_GROUP are needed to set the webhook's host key and read the app's master key."
    Write-Manual
    exit 1
  }
}

# The health report (200 healthy, 503 not: both carry it).
function Get-Health {
  try {
    $response = Invoke-WebRequest -Uri "$url/api/health" -Headers @{ 'x-functions-key' = $key } -TimeoutSec 30 -SkipHttpErrorCheck
    return $response.Content | ConvertFrom-Json
  } catch { return $null }
}
function Get-PassAt($report) { if ($report -and $report.maintain) { return $report.maintain.at } else { return '' } }

# A fresh deployment may still be starting or restarting: the key calls go through the Functions host, which answers
# them only once it runs, and the admin endpoint answers 503 (or 404 before the functions are indexed). Each step is
# retried until the deadline.
$deadline = (Get-Date).AddSeconds($waitSeconds)
$step = "read the app's master key"
$keySet = $false
$before = ''
while ($true) {
  if (-not $key) {
    $step = "read the app's master key"
    $key = az functionapp keys list -g $group -n $app --query masterKey -o tsv 2>$null
    if ($LASTEXITCODE -ne 0) { $key = '' }
  }
  # The webhook's host key, the value the app reads from Key Vault for Graph's URLs; set before the maintain pass
  # gives Graph those URLs, and here because the host is known to run only after the deploy.
  if ($key -and -not $keySet) {
    if ($env:WEBHOOK_FUNCTION_KEY) {
      $step = 'set the host key graphwebhook'
      az functionapp keys set -g $group -n $app --key-type functionKeys --key-name graphwebhook --key-value $env:WEBHOOK_FUNCTION_KEY 2>$null | Out-Null
      if ($LASTEXITCODE -eq 0) { $keySet = $true; Write-Host 'Host key graphwebhook set.' }
    } else {
      $keySet = $true
    }
    if ($keySet) { $before = Get-PassAt (Get-Health) }
  }
  if ($keySet) {
    $step = "start the maintain pass at $url/admin/functions/maintain"
    try {
      Invoke-WebRequest -Method Post -Uri "$url/admin/functions/maintain" -Headers @{ 'x-functions-key' = $key } -ContentType 'application/json' -Body '{}' -TimeoutSec 30 | Out-Null
      break
    } catch { }
  }
  if ((Get-Date) -ge $deadline) {
    Write-Host "Gave up after ${waitSeconds}s: could not $step (the app may still be starting)."
    Write-Manual
    exit 1
  }
  Start-Sleep -Seconds 3
}
Write-Host 'Maintain pass started in the app; waiting for it to finish...'

while ($true) {
  $report = Get-Health
  $now = Get-PassAt $report
  if ($now -and $now -ne $before) { break }
  if ((Get-Date) -ge $deadline) {
    Write-Host "No finished pass within ${waitSeconds}s; see the app's logs (event subscription.failed) or run"
    Write-Host "python -m shared.cli status; then 'azd hooks run postdeploy' again."
    exit 1
  }
  Start-Sleep -Seconds 3
}

# GRAPH_DELIVERY=eventgrid: the pass made the first subscription, so Graph creates the partner topic; connect it.
if ($env:GRAPH_DELIVERY -eq 'eventgrid') {
  & pwsh -NoProfile -File (Join-Path $PSScriptRoot 'eventgrid.ps1')
  if ($LASTEXITCODE) { Write-Host 'Event Grid is not connected yet; mail waits in Graph until it is.' }
}

$failed = 0
$folders = $report.maintain.folders.PSObject.Properties
foreach ($folder in $folders) {
  $bad = $folder.Value.StartsWith('failed')
  if ($bad) { $failed++ }
  Write-Host ("{0} {1}: {2}" -f ($(if ($bad) { 'FAIL' } else { 'OK  ' })), $folder.Name, $folder.Value)
}
$count = @($folders).Count
Write-Host "$($count - $failed) of $count mailbox folders done, $failed failed (pass at $($report.maintain.at))"
if ($failed) {
  Write-Host 'A folder that failed for lack of access needs the steps printed after provisioning (docs/setup.md);'
  Write-Host 'then run this again: azd hooks run postdeploy'
  exit 1
}
