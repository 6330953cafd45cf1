# After provisioning: print the steps that need a tenant administrator, with this environment's values filled in.
# azd passes the environment (including the outputs of infra/main.bicep) as environment variables.
$ErrorActionPreference = 'Stop'

if ([string]::IsNullOrWhiteSpace($env:MAILBOXES)) { throw 'MAILBOXES is not set' }
$tenant = $env:GRAPH_TENANT_ID
$client = $env:GRAPH_CLIENT_ID
$label = "Mail Attachment Ingest $env:AZURE_ENV_NAME".Trim()
$container = if ($env:ATTACHMENTS_CONTAINER) { $env:ATTACHMENTS_CONTAINER } else { 'mail-attachments' }

# The workbook the deployment made (docs/operations.md, "The workbook"), and a note when the operator has no data roles.
function Write-Workbook {
  if ($env:AZURE_WORKBOOK_URL) {
    Write-Host ''
    Write-Host 'Mail flow, lag, failures, subscriptions and polls at a glance (Azure Monitor workbook):'
    Write-Host "  $($env:AZURE_WORKBOOK_URL)"
  }
  if (-not $env:AZURE_PRINCIPAL_ID) {
    Write-Host ''
    Write-Host 'No AZURE_PRINCIPAL_ID: this deployment gave nobody the data roles the commands above need'
    Write-Host '(Key Vault Secrets Officer, Storage Blob and Queue Data Contributor); docs/setup.md says how.'
  }
}

# The enterprise application's object id, when the Azure CLI is signed in to the app's tenant.
$objectId = ''
if ($client -and (Get-Command az -ErrorAction SilentlyContinue)) {
  $objectId = (az ad sp show --id $client --query id --output tsv 2>$null)
  if ($LASTEXITCODE -ne 0) { $objectId = '' }
}
$objectIdExpr = if ($objectId) { "'$objectId'" } else { "(az ad sp show --id $client --query id --output tsv)" }

# One filter term per mailbox (the part before the first '/'): an object id or an SMTP address.
# IMAP and POP3 accounts (entries with '://') are no Exchange Online recipients of this app's Graph access.
$mailboxes = $env:MAILBOXES.Split(',') | Where-Object { $_ -notmatch '://' } |
  ForEach-Object { $_.Split('/')[0].Trim().ToLowerInvariant() } |
  Where-Object { $_ } | Select-Object -Unique
$guid = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
$filter = ($mailboxes | ForEach-Object {
    if ($_ -match $guid) { "ExternalDirectoryObjectId -eq '$_'" } else { "PrimarySmtpAddress -eq '$_'" }
  }) -join ' -or '
$firstMailbox = @($mailboxes)[0]

# The Key Vault secret each IMAP or POP3 account names (`secret=NAME`), once each.
$accounts = @($env:MAILBOXES.Split(',') | ForEach-Object { $_.Trim() } | Where-Object { $_ -match '://' })
$secrets = @($accounts | Where-Object { $_ -match '[?&]secret=([^&#]*)' } | ForEach-Object {
    [void]($_ -match '[?&]secret=([^&#]*)'); $Matches[1]
  } | Where-Object { $_ } | Select-Object -Unique)
$vault = if ($env:AZURE_KEY_VAULT_NAME) { $env:AZURE_KEY_VAULT_NAME } else { '<vault>' }
$secretLines = ($secrets | ForEach-Object {
    "      az keyvault secret set --vault-name $vault --name $_ --value '<password>'"
  }) -join "`n"

if (-not $filter) {
  # No Microsoft 365 mailbox: nothing to grant in Exchange Online for Graph.
  Write-Host @"

Provisioned. Left to do by hand (docs/setup.md explains each step):

1. Put each account's password, app password or OAuth refresh token in the Key Vault secret its URL names:

$secretLines

"@
  # auth=xoauth2 without a secret: the app registration's own credential, granted in Exchange Online.
  if ($accounts | Where-Object { ($_ -match '[?&]auth=xoauth2') -and ($_ -notmatch '[?&]secret=') }) {
    Write-Host @"
   The accounts with auth=xoauth2 and no secret sign in as the app registration ($client): grant it
   IMAP.AccessAsApp or POP.AccessAsApp as docs/setup.md shows ("Exchange Online over IMAP or POP, app-only").

"@
  }
  Write-Host @"
2. Deploy the code if this was 'azd provision' only: azd deploy
3. Check the configuration and each account's sign-in: python -m shared.cli check
4. Send a mail with an attachment to an account and look for it in the '$container' container.
"@
  Write-Workbook
  exit 0
}

Write-Host @"

Provisioned. Left to do by hand, as a tenant administrator (docs/setup.md explains each step):

1. Let the app read mail. Choose one:

   a) Only the configured mailboxes (recommended). In Exchange Online PowerShell (Connect-ExchangeOnline):

      New-ServicePrincipal -AppId $client -ObjectId $objectIdExpr -DisplayName "$label"
      New-ManagementScope -Name "$label" -RecipientRestrictionFilter "$filter"
      New-ManagementRoleAssignment -Name "$label Mail.Read" -App $client -Role "Application Mail.Read" -CustomResourceScope "$label"
      # Only with post-actions (mark as read, move, categorise):
      New-ManagementRoleAssignment -Name "$label Mail.ReadWrite" -App $client -Role "Application Mail.ReadWrite" -CustomResourceScope "$label"
      Test-ServicePrincipalAuthorization -Identity $client -Resource $firstMailbox

      Grant no Mail.Read or Mail.ReadWrite application permission to the app in Entra ID (remove it if it was
      consented): Entra grants apply to every mailbox and add to the scope above. To scope by a mail-enabled
      security group instead of addresses, use -RecipientRestrictionFilter "MemberOfGroup -eq '<group DN>'".

   b) Every mailbox in the tenant: give the app registration the application permission Mail.Read
      (and Mail.ReadWrite for post-actions), then grant admin consent:

      https://login.microsoftonline.com/$tenant/adminconsent?client_id=$client

"@
if ($secrets) {
  Write-Host @"
   And put each IMAP or POP3 account's password, app password or OAuth refresh token in the Key Vault
   secret its URL names:

$secretLines

"@
}
Write-Host @"
2. Deploy the code if this was 'azd provision' only: azd deploy
3. Check the configuration and Graph access: python -m shared.cli check
4. Send a mail with an attachment to $firstMailbox and look for it in the '$container' container.
"@
Write-Workbook
