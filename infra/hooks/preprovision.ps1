# Before provisioning: check the settings azd cannot guess, and create the webhook key once per environment.
# The key is the Function App host key and a Key Vault secret, and Graph subscriptions carry it in their URLs,
# so it stays the same across provisions (after a rotation the app recreates its subscriptions with the new key).
$ErrorActionPreference = 'Stop'

# The app registration is needed for a Microsoft 365 mailbox (an entry without '://') and for an IMAP or POP3
# account that signs in with auth=xoauth2 and no secret= (the app's own Entra credential); not for accounts
# with a password. No MAILBOXES yet: ask for everything a Microsoft 365 deployment needs.
$entries = @("$env:MAILBOXES".Split(',') | ForEach-Object { $_.Trim() } | Where-Object { $_ })
$needsApp = ($entries.Count -eq 0) -or [bool]($entries | Where-Object {
    ($_ -notmatch '://') -or (($_ -match '[?&]auth=xoauth2') -and ($_ -notmatch '[?&]secret='))
  })

# The credential is a client secret, or a Key Vault certificate named by GRAPH_CLIENT_CERTIFICATE.
$required = @('MAILBOXES')
if ($needsApp) {
  $required = @('GRAPH_CLIENT_ID', 'MAILBOXES')
  if ([string]::IsNullOrWhiteSpace($env:GRAPH_CLIENT_CERTIFICATE)) {
    $required = @('GRAPH_CLIENT_ID', 'GRAPH_CLIENT_SECRET', 'MAILBOXES')
  }
}
$missing = $required |
  Where-Object { [string]::IsNullOrWhiteSpace([Environment]::GetEnvironmentVariable($_)) }
if ($missing) {
  Write-Host "Set these before provisioning: $($missing -join ' ')"
  foreach ($name in $missing) { Write-Host "  azd env set $name <value>" }
  Write-Host '(GRAPH_CLIENT_CERTIFICATE, the name of a Key Vault certificate, may replace GRAPH_CLIENT_SECRET.)'
  Write-Host 'See docs/setup.md for what each one is.'
  exit 1
}

if ([string]::IsNullOrWhiteSpace($env:WEBHOOK_FUNCTION_KEY)) {
  # 32 random bytes as hex: URL-safe, and within the host key's allowed characters.
  $bytes = [byte[]]::new(32)
  [System.Security.Cryptography.RandomNumberGenerator]::Fill($bytes)
  $key = -join ($bytes | ForEach-Object { $_.ToString('x2') })
  azd env set WEBHOOK_FUNCTION_KEY $key | Out-Null
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
  Write-Host 'Created WEBHOOK_FUNCTION_KEY for this environment.'
}

# Every other setting the app reads (app-settings.txt) that this environment sets goes to the app as it is: one
# base64 JSON object, so that a value with quotes or backslashes (ROUTES is JSON) survives the parameters file.
$chosen = [ordered]@{}
foreach ($name in (Get-Content (Join-Path $PSScriptRoot 'app-settings.txt') | Where-Object { $_.Trim() -and -not $_.StartsWith('#') } | Sort-Object)) {
  $value = [Environment]::GetEnvironmentVariable($name.Trim())
  if ($value) { $chosen[$name.Trim()] = $value }
}
$fromAzd = if ($chosen.Count) { [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes(($chosen | ConvertTo-Json -Compress))) } else { '' }
if ("$($env:APP_SETTINGS_FROM_AZD)" -ne $fromAzd) {
  azd env set APP_SETTINGS_FROM_AZD $fromAzd | Out-Null
}

# A re-provision keeps the settings the app has now (changed in the portal, say) unless this environment sets them:
# the deployment reads them when the app exists. Without the Azure CLI that cannot be known, and they are replaced.
$exists = 'false'
if ($env:AZURE_FUNCTION_APP_NAME -and $env:AZURE_RESOURCE_GROUP) {
  if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Warning "without the Azure CLI this provision cannot keep the settings of $($env:AZURE_FUNCTION_APP_NAME) that the azd environment does not set."
  } else {
    $subscription = if ($env:AZURE_SUBSCRIPTION_ID) { @('--subscription', $env:AZURE_SUBSCRIPTION_ID) } else { @() }
    az functionapp show -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME @subscription --query id --output tsv 2>$null | Out-Null
    if ($LASTEXITCODE -eq 0) { $exists = 'true' }
  }
}
$currentExists = if ($env:AZURE_FUNCTION_APP_EXISTS) { $env:AZURE_FUNCTION_APP_EXISTS } else { 'false' }
if ($currentExists -ne $exists) {
  azd env set AZURE_FUNCTION_APP_EXISTS $exists | Out-Null
}

# After `azd down` this environment's Key Vault is soft-deleted, and purge protection keeps its name taken for 90 days:
# a new vault of that name would fail. The deployment recovers it instead (createMode 'recover', its secrets with it),
# which is what purge protection is for. Decided on every provision, since 'recover' fails when there is nothing to
# recover. The vault is found by its azd-env-name tag and region, which a deleted vault keeps.
$mode = 'default'
if ((Get-Command az -ErrorAction SilentlyContinue) -and $env:AZURE_ENV_NAME) {
  $query = "[?properties.tags.""azd-env-name""=='$($env:AZURE_ENV_NAME)' && properties.location=='$($env:AZURE_LOCATION)'].name"
  $subscription = if ($env:AZURE_SUBSCRIPTION_ID) { @('--subscription', $env:AZURE_SUBSCRIPTION_ID) } else { @() }
  $deleted = az keyvault list-deleted --resource-type vault @subscription --query $query --output tsv 2>$null
  if ($LASTEXITCODE -eq 0 -and $deleted) {
    $mode = 'recover'
    Write-Host "Key Vault $deleted of this environment is soft-deleted (azd down): this provision recovers it."
  }
}
$current = if ($env:KEY_VAULT_CREATE_MODE) { $env:KEY_VAULT_CREATE_MODE } else { 'default' }
if ($current -ne $mode) {
  azd env set KEY_VAULT_CREATE_MODE $mode | Out-Null
}

# GRAPH_DELIVERY=eventgrid: the subscription must have the Microsoft.EventGrid resource provider before Graph can
# create a partner topic in it (registering is idempotent; it takes a minute the first time).
if ($env:GRAPH_DELIVERY -eq 'eventgrid' -and (Get-Command az -ErrorAction SilentlyContinue)) {
  $subscription = if ($env:AZURE_SUBSCRIPTION_ID) { @('--subscription', $env:AZURE_SUBSCRIPTION_ID) } else { @() }
  az provider register --namespace Microsoft.EventGrid --wait @subscription
  if ($LASTEXITCODE) { Write-Host 'Could not register Microsoft.EventGrid; run: az provider register --namespace Microsoft.EventGrid' }
}

# MALWARE_SCANNING=defender: Defender for Storage (Microsoft.Security) and the topic it publishes to (Microsoft.EventGrid).
# A deployment registers the providers of the resources it declares, but Defender's own (its scanner, the system topic
# it listens to uploads with) come after; registering first makes the first provision work.
if ($env:MALWARE_SCANNING -and $env:MALWARE_SCANNING -cnotin @('off', 'defender')) {
  # The app setting's values, as the template's parameter allows them (lower case: Bicep's @allowed is exact).
  Write-Error "MALWARE_SCANNING must be off or defender (lower case), not '$($env:MALWARE_SCANNING)': azd env set MALWARE_SCANNING defender (or off)"
  exit 1
}
if ($env:MALWARE_SCANNING -ceq 'defender' -and (Get-Command az -ErrorAction SilentlyContinue)) {
  $subscription = if ($env:AZURE_SUBSCRIPTION_ID) { @('--subscription', $env:AZURE_SUBSCRIPTION_ID) } else { @() }
  foreach ($namespace in @('Microsoft.Security', 'Microsoft.EventGrid')) {
    az provider register --namespace $namespace --wait @subscription
    if ($LASTEXITCODE) { Write-Host "Could not register $namespace; run: az provider register --namespace $namespace" }
  }
}
