#!/bin/sh
# One-shot job (service temporal-admin-tools, image temporalio/admin-tools): waits
# for the Temporal frontend, makes sure the namespace exists (the plain server
# image, unlike the deprecated auto-setup image, does not create one), and
# registers the custom search attributes that ReleaseWorkflow upserts so the Web UI
# and `temporal workflow list --query` can filter releases. Idempotent: existing
# attributes of the same type are left alone. The worker starts only after this
# job exits 0.
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${TEMPORAL_NAMESPACE:=default}"
export TEMPORAL_ADDRESS TEMPORAL_NAMESPACE

echo "waiting for Temporal at $TEMPORAL_ADDRESS"
i=0
until temporal operator cluster health >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    echo "Temporal did not become healthy" >&2
    exit 1
  fi
  sleep 2
done

if ! temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  echo "creating namespace $TEMPORAL_NAMESPACE"
  temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention 72h
fi

# name type, one a line. Keep in sync with the workflow's search attribute keys.
attrs='MlreleaseModel Keyword
MlreleaseCandidateVersion Keyword
MlreleaseStage Keyword
MlreleaseCanaryWeight Int'

existing=$(temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE" 2>/dev/null || true)
echo "$attrs" | while read -r name type; do
  if echo "$existing" | grep -qw "$name"; then
    echo "search attribute $name already registered"
    continue
  fi
  echo "registering search attribute $name ($type)"
  # The namespace may take a moment to be visible to every frontend cache.
  n=0
  until temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" --name "$name" --type "$type"; do
    n=$((n + 1))
    if [ "$n" -ge 10 ]; then
      echo "could not register $name" >&2
      exit 1
    fi
    sleep 2
  done
done
echo "namespace $TEMPORAL_NAMESPACE and search attributes are ready"
