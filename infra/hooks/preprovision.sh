#!/bin/sh
# Before provisioning: check the settings azd cannot guess, and create the webhook key once per environment.
# The key is the Function App host key and a Key Vault secret, and Graph subscriptions carry it in their URLs,
# so it stays the same across provisions (after a rotation the app recreates its subscriptions with the new key).
set -eu

# The credential is a client secret, or a Key Vault certificate named by GRAPH_CLIENT_CERTIFICATE.
required="GRAPH_CLIENT_ID MAILBOXES"
if [ -z "${GRAPH_CLIENT_CERTIFICATE:-}" ]; then
  required="GRAPH_CLIENT_ID GRAPH_CLIENT_SECRET MAILBOXES"
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
