# After deploying: run one maintain pass in the deployed app now, so its mailboxes are subscribed within a
# minute instead of at the timer's first occurrence (postdeploy.sh explains why through the admin endpoint).
# Prints what the pass did, one line per mailbox folder, from GET /api/health; exits 1 if a folder failed.
# FUNCTION_APP_URL and FUNCTION_APP_MASTER_KEY, when set, stand in for what the Azure CLI would look up.
$ErrorActionPreference = 'Stop'

$url = if ($env:FUNCTION_APP_URL) { $env:FUNCTION_APP_URL } else { $env:WEBHOOK_BASE_URL }
$key = $env:FUNCTION_APP_MASTER_KEY
$waitSeconds = if ($env:MAINTAIN_WAIT_SECONDS) { [int]$env:MAINTAIN_WAIT_SECONDS } else { 120 }
$manual = "Run one maintain pass by hand: Azure portal > Function App > Functions > maintain > Test/Run, " +
  "or 'azd hooks run postdeploy' once the Azure CLI is signed in. The timer runs it within 15 minutes anyway."

if (-not $key) {
  if (-not (Get-Command az -ErrorAction SilentlyContinue) -or -not $env:AZURE_FUNCTION_APP_NAME -or -not $env:AZURE_RESOURCE_GROUP) {
    Write-Host "Not subscribed yet: the Azure CLI (az) and this environment's AZURE_FUNCTION_APP_NAME and AZURE_RESOURCE_GROUP are needed to read the app's master key."
    Write-Host $manual
    exit 1
  }
  $key = az functionapp keys list -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME --query masterKey -o tsv
}
if (-not $url) { Write-Host "WEBHOOK_BASE_URL (the app's https://host) is not set"; exit 1 }
$headers = @{ 'x-functions-key' = $key }

# The health report (200 healthy, 503 not: both carry it).
function Get-Health {
  try {
    $response = Invoke-WebRequest -Uri "$url/api/health" -Headers $headers -TimeoutSec 30 -SkipHttpErrorCheck
    return $response.Content | ConvertFrom-Json
  } catch { return $null }
}
function Get-PassAt($report) { if ($report -and $report.maintain) { return $report.maintain.at } else { return '' } }

$before = Get-PassAt (Get-Health)
$deadline = (Get-Date).AddSeconds($waitSeconds)
while ($true) {
  try {
    Invoke-WebRequest -Method Post -Uri "$url/admin/functions/maintain" -Headers $headers -ContentType 'application/json' -Body '{}' -TimeoutSec 30 | Out-Null
    break
  } catch {
    # A fresh deployment may still be starting.
    if ((Get-Date) -ge $deadline) {
      Write-Host "The app did not accept the maintain run at $url/admin/functions/maintain within ${waitSeconds}s."
      Write-Host $manual
      exit 1
    }
    Start-Sleep -Seconds 3
  }
}
Write-Host 'Maintain pass started in the app; waiting for it to finish...'

while ($true) {
  $report = Get-Health
  $now = Get-PassAt $report
  if ($now -and $now -ne $before) { break }
  if ((Get-Date) -ge $deadline) {
    Write-Host "No finished pass within ${waitSeconds}s; see the app's logs (event subscription.failed) or run status."
    exit 1
  }
  Start-Sleep -Seconds 3
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
