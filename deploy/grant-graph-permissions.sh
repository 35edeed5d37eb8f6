#!/usr/bin/env bash
# Grants remediator's Microsoft Graph application permissions to a service
# principal: the function app's managed identity (the template's output
# principalId) or an app registration's service principal.
#
#   deploy/grant-graph-permissions.sh <principal object id> [--groups]
#
# Run it once, signed in with `az login` as a Privileged Role Administrator
# or Global Administrator of the tenant whose devices remediator manages
# (ARM templates cannot grant Graph app roles). It is safe to run again:
# roles already granted are left as they are. --groups adds the two
# permissions that targets with group_ids need.
set -euo pipefail

usage() { echo "usage: $0 <principal object id> [--groups]" >&2; exit 2; }
[ $# -ge 1 ] || usage
PRINCIPAL=$1; shift
GROUPS_TOO=false
for arg in "$@"; do
  case $arg in
    --groups) GROUPS_TOO=true ;;
    *) usage ;;
  esac
done
[[ $PRINCIPAL =~ ^[0-9a-fA-F-]{36}$ ]] || { echo "$PRINCIPAL is not an object id (a GUID)" >&2; exit 2; }

ROLES=(
  DeviceManagementManagedDevices.PrivilegedOperations.All
  DeviceManagementManagedDevices.Read.All
  DeviceManagementScripts.Read.All
)
if $GROUPS_TOO; then ROLES+=(GroupMember.Read.All Device.Read.All); fi

GRAPH_APP=00000003-0000-0000-c000-000000000000
GRAPH_SP=$(az ad sp show --id $GRAPH_APP --query id -o tsv)
ASSIGNED=$(az rest -m GET -u "https://graph.microsoft.com/v1.0/servicePrincipals/$PRINCIPAL/appRoleAssignments" \
  --query "value[?resourceId=='$GRAPH_SP'].appRoleId" -o tsv)

for ROLE in "${ROLES[@]}"; do
  ROLE_ID=$(az ad sp show --id $GRAPH_APP --query "appRoles[?value=='$ROLE'].id | [0]" -o tsv)
  if [ -z "$ROLE_ID" ]; then echo "Microsoft Graph has no app role $ROLE" >&2; exit 1; fi
  if grep -qx "$ROLE_ID" <<<"$ASSIGNED"; then echo "$ROLE: already granted"; continue; fi
  az rest -m POST -u "https://graph.microsoft.com/v1.0/servicePrincipals/$PRINCIPAL/appRoleAssignments" \
    --headers Content-Type=application/json \
    -b "{\"principalId\":\"$PRINCIPAL\",\"resourceId\":\"$GRAPH_SP\",\"appRoleId\":\"$ROLE_ID\"}" -o none
  echo "$ROLE: granted"
done
echo "Done. Tokens issued from now on carry the roles (a warm function app may keep an older token for up to an hour)."
