#!/bin/sh
# After provisioning: print the steps that need a tenant administrator, with this environment's values filled in.
# azd passes the environment (including the outputs of infra/main.bicep) as environment variables.
set -eu

mailboxes="${MAILBOXES:?MAILBOXES is not set}"
tenant="${GRAPH_TENANT_ID:-}"
client="${GRAPH_CLIENT_ID:-}"
label="Mail Attachment Ingest ${AZURE_ENV_NAME:-}"
label="${label% }"

# The workbook the deployment made (docs/operations.md, "The workbook"), and a note when the operator has no data roles.
workbook() {
  if [ -n "${AZURE_WORKBOOK_URL:-}" ]; then
    echo
    echo "Mail flow, lag, failures, subscriptions and polls at a glance (Azure Monitor workbook):"
    echo "  $AZURE_WORKBOOK_URL"
  fi
  if [ -z "${AZURE_PRINCIPAL_ID:-}" ]; then
    echo
    echo "No AZURE_PRINCIPAL_ID: this deployment gave nobody the data roles the commands above need"
    echo "(Key Vault Secrets Officer, Storage Blob and Queue Data Contributor); docs/setup.md says how."
  fi
}

# The enterprise application's object id, when the Azure CLI is signed in to the app's tenant.
object_id=""
if [ -n "$client" ] && command -v az >/dev/null 2>&1; then
  object_id=$(az ad sp show --id "$client" --query id --output tsv 2>/dev/null || true)
fi
if [ -n "$object_id" ]; then
  object_id_expr="'$object_id'"
else
  object_id_expr="(az ad sp show --id $client --query id --output tsv)"
fi

# One filter term per Microsoft 365 mailbox (the part before the first '/'): an object id or an SMTP address.
# IMAP and POP3 accounts (entries with '://') are no Exchange Online recipients of this app's Graph access.
filter=""
for mailbox in $(printf '%s\n' "$mailboxes" | tr ',' '\n' | grep -v '://' | sed 's|/.*||; s/^[[:space:]]*//; s/[[:space:]]*$//' \
  | tr '[:upper:]' '[:lower:]' | awk 'NF && !seen[$0]++'); do
  if printf '%s' "$mailbox" | grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'; then
    term="ExternalDirectoryObjectId -eq '$mailbox'"
  else
    term="PrimarySmtpAddress -eq '$mailbox'"
  fi
  filter="${filter:+$filter -or }$term"
  first_mailbox="${first_mailbox:-$mailbox}"
done

# The Key Vault secret each IMAP or POP3 account names (`secret=NAME`), once each.
secrets=$(printf '%s\n' "$mailboxes" | tr ',' '\n' | grep '://' | grep -E '[?&]secret=' \
  | sed 's/.*[?&]secret=\([^&#]*\).*/\1/' | awk 'NF && !seen[$0]++' || true)
vault="${AZURE_KEY_VAULT_NAME:-<vault>}"

if [ -z "$filter" ]; then
  # No Microsoft 365 mailbox: nothing to grant in Exchange Online for Graph.
  cat <<TEXT

Provisioned. Left to do by hand (docs/setup.md explains each step):

1. Put each account's password, app password or OAuth refresh token in the Key Vault secret its URL names:

TEXT
  for name in $secrets; do
    echo "      az keyvault secret set --vault-name $vault --name $name --value '<password>'"
  done
  echo
  # auth=xoauth2 without a secret: the app registration's own credential, granted in Exchange Online.
  if printf '%s\n' "$mailboxes" | tr ',' '\n' | grep -E '[?&]auth=xoauth2' | grep -Evq '[?&]secret='; then
    cat <<TEXT
   The accounts with auth=xoauth2 and no secret sign in as the app registration ($client): grant it
   IMAP.AccessAsApp or POP.AccessAsApp as docs/setup.md shows ("Exchange Online over IMAP or POP, app-only").

TEXT
  fi
  cat <<TEXT
2. Deploy the code if this was 'azd provision' only: azd deploy
3. Check the configuration and each account's sign-in: python -m shared.cli check
4. Send a mail with an attachment to an account and look for it in the '${ATTACHMENTS_CONTAINER:-mail-attachments}' container.
TEXT
  workbook
  exit 0
fi

cat <<TEXT

Provisioned. Left to do by hand, as a tenant administrator (docs/setup.md explains each step):

1. Let the app read mail. Choose one:

   a) Only the configured mailboxes (recommended). In Exchange Online PowerShell (Connect-ExchangeOnline):

      New-ServicePrincipal -AppId $client -ObjectId $object_id_expr -DisplayName "$label"
      New-ManagementScope -Name "$label" -RecipientRestrictionFilter "$filter"
      New-ManagementRoleAssignment -Name "$label Mail.Read" -App $client -Role "Application Mail.Read" -CustomResourceScope "$label"
      # Only with post-actions (mark as read, move, categorise):
      New-ManagementRoleAssignment -Name "$label Mail.ReadWrite" -App $client -Role "Application Mail.ReadWrite" -CustomResourceScope "$label"
      Test-ServicePrincipalAuthorization -Identity $client -Resource $first_mailbox

      Grant no Mail.Read or Mail.ReadWrite application permission to the app in Entra ID (remove it if it was
      consented): Entra grants apply to every mailbox and add to the scope above. To scope by a mail-enabled
      security group instead of addresses, use -RecipientRestrictionFilter "MemberOfGroup -eq '<group DN>'".

   b) Every mailbox in the tenant: give the app registration the application permission Mail.Read
      (and Mail.ReadWrite for post-actions), then grant admin consent:

      https://login.microsoftonline.com/$tenant/adminconsent?client_id=$client

TEXT
if [ -n "$secrets" ]; then
  printf '   And put each IMAP or POP3 account'"'"'s password, app password or OAuth refresh token in the Key Vault
   secret its URL names:\n\n'
  for name in $secrets; do
    echo "      az keyvault secret set --vault-name $vault --name $name --value '<password>'"
  done
  echo
fi
cat <<TEXT
2. Deploy the code if this was 'azd provision' only: azd deploy
3. Check the configuration and Graph access: python -m shared.cli check
4. Send a mail with an attachment to $first_mailbox and look for it in the '${ATTACHMENTS_CONTAINER:-mail-attachments}' container.
TEXT
workbook
