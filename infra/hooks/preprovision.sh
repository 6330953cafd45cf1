#!/bin/sh
# Before provisioning: check the settings azd cannot guess, and create the webhook key once per environment.
# The key is the Function App host key and a Key Vault secret, and Graph subscriptions carry it in their URLs,
# so it stays the same across provisions (after a rotation the app recreates its subscriptions with the new key).
set -euf  # -f: MAILBOXES is split on commas below, never globbed

# The app registration is needed for a Microsoft 365 mailbox (an entry without '://') and for an IMAP or POP3
# account that signs in with auth=xoauth2 and no secret= (the app's own Entra credential); not for accounts
# with a password. No MAILBOXES yet: ask for everything a Microsoft 365 deployment needs.
needs_app=""
if [ -z "${MAILBOXES:-}" ]; then
  needs_app=1
fi
old_ifs=$IFS
IFS=','
for entry in ${MAILBOXES:-}; do
  entry=$(printf '%s' "$entry" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
  case "$entry" in
    "") ;;
    *://*)
      case "$entry" in
        *[?\&]auth=xoauth2*) case "$entry" in *[?\&]secret=*) ;; *) needs_app=1 ;; esac ;;
      esac
      ;;
    *) needs_app=1 ;;
  esac
done
IFS=$old_ifs

# The credential is a client secret, or a Key Vault certificate named by GRAPH_CLIENT_CERTIFICATE.
required="MAILBOXES"
if [ -n "$needs_app" ]; then
  required="GRAPH_CLIENT_ID MAILBOXES"
  if [ -z "${GRAPH_CLIENT_CERTIFICATE:-}" ]; then
    required="GRAPH_CLIENT_ID GRAPH_CLIENT_SECRET MAILBOXES"
  fi
fi
missing=""
for name in $required; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    missing="$missing $name"
  fi
done
if [ -n "$missing" ]; then
  echo "Set these before provisioning:$missing" >&2
  for name in $missing; do
    echo "  azd env set $name <value>" >&2
  done
  echo "(GRAPH_CLIENT_CERTIFICATE, the name of a Key Vault certificate, may replace GRAPH_CLIENT_SECRET.)" >&2
  echo "See docs/setup.md for what each one is." >&2
  exit 1
fi

if [ -z "${WEBHOOK_FUNCTION_KEY:-}" ]; then
  # 32 random bytes as hex: URL-safe, and within the host key's allowed characters.
  key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  azd env set WEBHOOK_FUNCTION_KEY "$key" >/dev/null
  echo "Created WEBHOOK_FUNCTION_KEY for this environment."
fi

# Every other setting the app reads (app-settings.txt) that this environment sets goes to the app as it is: one
# base64 JSON object, so that a value with quotes or backslashes (ROUTES is JSON) survives the parameters file.
settings_list="$(dirname "$0")/app-settings.txt"
from_azd=$(python3 - "$settings_list" <<'PY'
import base64, json, os, sys
names = [line.strip() for line in open(sys.argv[1], encoding="utf-8") if line.strip() and not line.startswith("#")]
chosen = {name: os.environ[name] for name in names if os.environ.get(name, "") != ""}
print(base64.b64encode(json.dumps(chosen, sort_keys=True).encode()).decode() if chosen else "")
PY
) || { echo "python3 is needed to pass the settings in $settings_list to the app" >&2; exit 1; }
if [ "${APP_SETTINGS_FROM_AZD:-}" != "$from_azd" ]; then
  azd env set APP_SETTINGS_FROM_AZD "$from_azd" >/dev/null
fi

# A re-provision keeps the settings the app has now (changed in the portal, say) unless this environment sets them:
# the deployment reads them when the app exists. Without the Azure CLI that cannot be known, and they are replaced.
exists=false
if [ -n "${AZURE_FUNCTION_APP_NAME:-}" ] && [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
  if ! command -v az >/dev/null 2>&1; then
    echo "Warning: without the Azure CLI this provision cannot keep the settings of ${AZURE_FUNCTION_APP_NAME} that the azd environment does not set." >&2
  elif az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"} \
    --query id --output tsv >/dev/null 2>&1; then
    exists=true
  fi
fi
if [ "${AZURE_FUNCTION_APP_EXISTS:-false}" != "$exists" ]; then
  azd env set AZURE_FUNCTION_APP_EXISTS "$exists" >/dev/null
fi

# After `azd down` this environment's Key Vault is soft-deleted, and purge protection keeps its name taken for 90 days:
# a new vault of that name would fail. The deployment recovers it instead (createMode 'recover', its secrets with it),
# which is what purge protection is for. Decided on every provision, since 'recover' fails when there is nothing to
# recover. The vault is found by its azd-env-name tag and region, which a deleted vault keeps.
mode=default
if command -v az >/dev/null 2>&1 && [ -n "${AZURE_ENV_NAME:-}" ]; then
  deleted=$(az keyvault list-deleted --resource-type vault ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"} \
    --query "[?properties.tags.\"azd-env-name\"=='$AZURE_ENV_NAME' && properties.location=='${AZURE_LOCATION:-}'].name" \
    --output tsv 2>/dev/null || true)
  if [ -n "$deleted" ]; then
    mode=recover
    echo "Key Vault $deleted of this environment is soft-deleted (azd down): this provision recovers it."
  fi
fi
if [ "${KEY_VAULT_CREATE_MODE:-default}" != "$mode" ]; then
  azd env set KEY_VAULT_CREATE_MODE "$mode" >/dev/null
fi

# GRAPH_DELIVERY=eventgrid: the subscription must have the Microsoft.EventGrid resource provider before Graph can
# create a partner topic in it (registering is idempotent; it takes a minute the first time).
if [ "${GRAPH_DELIVERY:-webhook}" = "eventgrid" ] && command -v az >/dev/null 2>&1; then
  az provider register --namespace Microsoft.EventGrid --wait ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"} \
    || echo "Could not register Microsoft.EventGrid; run: az provider register --namespace Microsoft.EventGrid" >&2
fi

# MALWARE_SCANNING=defender: Defender for Storage (Microsoft.Security) and the topic it publishes to (Microsoft.EventGrid).
# A deployment registers the providers of the resources it declares, but Defender's own (its scanner, the system topic
# it listens to uploads with) come after; registering first makes the first provision work.
case "${MALWARE_SCANNING:-off}" in
  off) ;;
  defender)
    if command -v az >/dev/null 2>&1; then
      for namespace in Microsoft.Security Microsoft.EventGrid; do
        az provider register --namespace "$namespace" --wait ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"} \
          || echo "Could not register $namespace; run: az provider register --namespace $namespace" >&2
      done
    fi
    ;;
  *)
    # The app setting's values, as the template's parameter allows them (lower case: Bicep's @allowed is exact).
    echo "MALWARE_SCANNING must be off or defender (lower case), not '$MALWARE_SCANNING': azd env set MALWARE_SCANNING defender (or off)" >&2
    exit 1
    ;;
esac
