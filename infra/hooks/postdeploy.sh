#!/bin/sh
# After deploying: run one maintain pass in the deployed app now, so its mailboxes are subscribed within a
# minute instead of at the timer's first occurrence. (The timer keeps runOnStartup off: in Azure it would
# also fire on every scale-out and restart.) The pass runs inside the app, with its managed identity and
# its own settings, through the Functions host's admin endpoint: this machine needs no app secret and no
# data role on the app's storage or vault, only the master key. This script then prints what the pass
# did, from GET /api/health, one line per mailbox folder, and exits 1 if a folder failed.
# First it sets the webhook's host key graphwebhook (WEBHOOK_FUNCTION_KEY) with the Azure CLI: only now is the
# Functions host known to run, which a key PUT needs (the Bicep cannot do it during provisioning on Flex).
# FUNCTION_APP_URL and FUNCTION_APP_MASTER_KEY, when set, stand in for what the Azure CLI would look up.
set -eu

url="${FUNCTION_APP_URL:-${WEBHOOK_BASE_URL:-}}"
key="${FUNCTION_APP_MASTER_KEY:-}"
wait_seconds="${MAINTAIN_WAIT_SECONDS:-120}"
app="${AZURE_FUNCTION_APP_NAME:-}"
group="${AZURE_RESOURCE_GROUP:-}"

manual() {
  echo "To finish by hand once the app is up:"
  if [ -n "${WEBHOOK_FUNCTION_KEY:-}" ]; then
    echo "  az functionapp keys set -g ${group:-<resource group>} -n ${app:-<function app>} --key-type functionKeys --key-name graphwebhook --key-value \"\$(azd env get-value WEBHOOK_FUNCTION_KEY)\""
  fi
  echo "  then run one maintain pass: Azure portal > Function App > Functions > maintain > Test/Run,"
  echo "  or 'azd hooks run postdeploy' again. The timer runs it within 15 minutes anyway."
}

[ -n "$url" ] || { echo "WEBHOOK_BASE_URL (the app's https://host) is not set"; manual; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed to read the app's answer"; manual; exit 1; }
if [ -z "$key" ] || [ -n "${WEBHOOK_FUNCTION_KEY:-}" ]; then
  if ! command -v az >/dev/null 2>&1 || [ -z "$app" ] || [ -z "$group" ]; then
    echo "Not subscribed yet: the Azure CLI (az) and this environment's AZURE_FUNCTION_APP_NAME and"
    echo "AZURE_RESOURCE_GROUP are needed to set the webhook's host key and read the app's master key."
    manual
    exit 1
  fi
fi

# The health report (200 healthy, 503 not: both carry it), and the time of the last pass it names.
health() { curl -sS --max-time 30 -H "x-functions-key: $key" "$url/api/health" 2>/dev/null || true; }
pass_at() {
  python3 -c '
import json, sys
try:
    print((json.load(sys.stdin).get("maintain") or {}).get("at") or "")
except ValueError:
    print("")
'
}

# A fresh deployment may still be starting or restarting: the key calls go through the Functions host, which answers
# them only once it runs, and the admin endpoint answers 503 (or 404 before the functions are indexed). Each step is
# retried until the deadline; none may end the script under set -e before then.
deadline=$(( $(date +%s) + wait_seconds ))
step="read the app's master key"
key_set=""
before=""
while :; do
  if [ -z "$key" ]; then
    step="read the app's master key"
    key=$(az functionapp keys list -g "$group" -n "$app" --query masterKey -o tsv 2>/dev/null) || key=""
  fi
  # The webhook's host key, the value the app reads from Key Vault for Graph's URLs; set before the maintain pass
  # gives Graph those URLs, and here because the host is known to run only after the deploy.
  if [ -n "$key" ] && [ -z "$key_set" ] && [ -n "${WEBHOOK_FUNCTION_KEY:-}" ]; then
    step="set the host key graphwebhook"
    if az functionapp keys set -g "$group" -n "$app" --key-type functionKeys --key-name graphwebhook \
      --key-value "$WEBHOOK_FUNCTION_KEY" >/dev/null 2>&1; then
      key_set=1
      echo "Host key graphwebhook set."
      before=$(health | pass_at)
    fi
  elif [ -n "$key" ] && [ -z "$key_set" ]; then
    key_set=skipped
    before=$(health | pass_at)
  fi
  if [ -n "$key_set" ]; then
    step="start the maintain pass at $url/admin/functions/maintain"
    if curl -sS -f --max-time 30 -X POST -H "x-functions-key: $key" -H "Content-Type: application/json" \
      -d '{}' "$url/admin/functions/maintain" >/dev/null 2>&1; then
      break
    fi
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "Gave up after ${wait_seconds}s: could not $step (the app may still be starting)."
    manual
    exit 1
  fi
  sleep 3
done
echo "Maintain pass started in the app; waiting for it to finish..."

while :; do
  report=$(health)
  now=$(printf '%s' "$report" | pass_at)
  if [ -n "$now" ] && [ "$now" != "$before" ]; then
    break
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "No finished pass within ${wait_seconds}s; see the app's logs (event subscription.failed) or run"
    echo "python -m shared.cli status; then 'azd hooks run postdeploy' again."
    exit 1
  fi
  sleep 3
done

# GRAPH_DELIVERY=eventgrid: the pass made the first subscription, so Graph creates the partner topic; connect it.
if [ "${GRAPH_DELIVERY:-webhook}" = "eventgrid" ]; then
  sh "$(dirname "$0")/eventgrid.sh" || echo "Event Grid is not connected yet; mail waits in Graph until it is."
fi

printf '%s' "$report" | python3 -c '
import json, sys
last = json.load(sys.stdin)["maintain"]
folders = last.get("folders") or {}
for name, result in folders.items():
    print(("FAIL" if result.startswith("failed") else "OK  ") + " " + name + ": " + result)
failed = sum(1 for r in folders.values() if r.startswith("failed"))
at = last.get("at")
print(f"{len(folders) - failed} of {len(folders)} mailbox folders done, {failed} failed (pass at {at})")
if failed:
    print("A folder that failed for lack of access needs the steps printed after provisioning (docs/setup.md);")
    print("then run this again: azd hooks run postdeploy")
sys.exit(1 if failed else 0)
'
