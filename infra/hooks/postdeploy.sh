#!/bin/sh
# After deploying: run one maintain pass in the deployed app now, so its mailboxes are subscribed within a
# minute instead of at the timer's first occurrence. (The timer keeps runOnStartup off: in Azure it would
# also fire on every scale-out and restart.) The pass runs inside the app, with its managed identity and
# its own settings, through the Functions host's admin endpoint: this machine needs no app secret and no
# data role on the app's storage or vault, only the master key. This script then prints what the pass
# did, from GET /api/health, one line per mailbox folder, and exits 1 if a folder failed.
# FUNCTION_APP_URL and FUNCTION_APP_MASTER_KEY, when set, stand in for what the Azure CLI would look up.
set -eu

url="${FUNCTION_APP_URL:-${WEBHOOK_BASE_URL:-}}"
key="${FUNCTION_APP_MASTER_KEY:-}"
wait_seconds="${MAINTAIN_WAIT_SECONDS:-120}"

manual() {
  echo "Run one maintain pass by hand: Azure portal > Function App > Functions > maintain > Test/Run,"
  echo "or 'azd hooks run postdeploy' once the Azure CLI is signed in. The timer runs it within 15 minutes anyway."
}

if [ -z "$key" ]; then
  if ! command -v az >/dev/null 2>&1 || [ -z "${AZURE_FUNCTION_APP_NAME:-}" ] || [ -z "${AZURE_RESOURCE_GROUP:-}" ]; then
    echo "Not subscribed yet: the Azure CLI (az) and this environment's AZURE_FUNCTION_APP_NAME and"
    echo "AZURE_RESOURCE_GROUP are needed to read the app's master key."
    manual
    exit 1
  fi
  key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query masterKey -o tsv)
fi
[ -n "$url" ] || { echo "WEBHOOK_BASE_URL (the app's https://host) is not set"; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed to read the app's answer"; manual; exit 1; }

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

before=$(health | pass_at)
# A fresh deployment may still be starting: the host answers 503 (or 404 before the functions are indexed).
deadline=$(( $(date +%s) + wait_seconds ))
until curl -sS -f --max-time 30 -X POST -H "x-functions-key: $key" -H "Content-Type: application/json" \
  -d '{}' "$url/admin/functions/maintain" >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "The app did not accept the maintain run at $url/admin/functions/maintain within ${wait_seconds}s."
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
    echo "No finished pass within ${wait_seconds}s; see the app's logs (event subscription.failed) or run status."
    exit 1
  fi
  sleep 3
done

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
