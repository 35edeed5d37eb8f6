#!/usr/bin/env bash
# Grants remediator's Microsoft Graph application permissions to a service
# principal: the function app's managed identity (the template's output
# principalId) or an app registration's service principal.
#
#   deploy/grant-graph-permissions.sh <principal object id> [--groups] [--config-read] [--graph-host HOST]
#
# Run it once, signed in with `az login` as a Privileged Role Administrator
# or Global Administrator of the tenant whose devices remediator manages
# (ARM templates cannot grant Graph app roles). It is safe to run again:
# roles already granted (every page of them) are left as they are.
#   --groups       adds GroupMember.Read.All and Device.Read.All, which targets with group_ids need
#   --config-read  adds DeviceManagementConfiguration.Read.All, which the Graph reference lists for
#                  this action and which older tenants need to read device health scripts
#   --graph-host   Microsoft Graph's host in a national cloud (graph.microsoft.us,
#                  dod-graph.microsoft.us, microsoftgraph.chinacloudapi.cn); default: the one of
#                  the cloud az is set to (az cloud show)
set -euo pipefail

usage() { echo "usage: $0 <principal object id> [--groups] [--config-read] [--graph-host HOST]" >&2; exit 2; }
[ $# -ge 1 ] || usage
PRINCIPAL=$1; shift
GROUPS_TOO=false
CONFIG_READ=false
GRAPH_HOST=
while [ $# -gt 0 ]; do
  case $1 in
    --groups) GROUPS_TOO=true ;;
    --config-read) CONFIG_READ=true ;;
    --graph-host) [ $# -ge 2 ] || usage; GRAPH_HOST=$2; shift ;;
    *) usage ;;
  esac
  shift
done
[[ $PRINCIPAL =~ ^[0-9a-fA-F-]{36}$ ]] || { echo "$PRINCIPAL is not an object id (a GUID)" >&2; exit 2; }
if [ -z "$GRAPH_HOST" ]; then
  GRAPH_HOST=$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)
fi
GRAPH_HOST=${GRAPH_HOST#https://}
GRAPH_HOST=${GRAPH_HOST%%/*}
[[ $GRAPH_HOST =~ ^[A-Za-z0-9.-]+$ ]] || { echo "$GRAPH_HOST is not a host name" >&2; exit 2; }

ROLES=(
  DeviceManagementManagedDevices.PrivilegedOperations.All
  DeviceManagementManagedDevices.Read.All
  DeviceManagementScripts.Read.All
)
if $GROUPS_TOO; then ROLES+=(GroupMember.Read.All Device.Read.All); fi
if $CONFIG_READ; then ROLES+=(DeviceManagementConfiguration.Read.All); fi

GRAPH_APP=00000003-0000-0000-c000-000000000000
GRAPH_SP=$(az ad sp show --id $GRAPH_APP --query id -o tsv)

# The principal's Graph roles, every page of them (a principal may hold
# more assignments than one page).
ASSIGNED=
URL="https://$GRAPH_HOST/v1.0/servicePrincipals/$PRINCIPAL/appRoleAssignments?\$top=100"
while [ -n "$URL" ]; do
  PAGE=$(az rest -m GET -u "$URL" \
    --query "[\"@odata.nextLink\" || 'none', join(' ', value[?resourceId=='$GRAPH_SP'].appRoleId)]" -o tsv)
  IFS=$'\t' read -r NEXT IDS <<<"$PAGE" || true
  ASSIGNED+=" ${IDS:-}"
  case ${NEXT:-} in
    "https://$GRAPH_HOST/"*) URL=$NEXT ;;
    none) URL= ;;
    *) echo "Graph answered a next page on another host: $NEXT" >&2; exit 1 ;;
  esac
done

for ROLE in "${ROLES[@]}"; do
  ROLE_ID=$(az ad sp show --id $GRAPH_APP --query "appRoles[?value=='$ROLE'].id | [0]" -o tsv)
  if [ -z "$ROLE_ID" ]; then echo "Microsoft Graph has no app role $ROLE" >&2; exit 1; fi
  if [[ " $ASSIGNED " == *" $ROLE_ID "* ]]; then echo "$ROLE: already granted"; continue; fi
  az rest -m POST -u "https://$GRAPH_HOST/v1.0/servicePrincipals/$PRINCIPAL/appRoleAssignments" \
    --headers Content-Type=application/json \
    -b "{\"principalId\":\"$PRINCIPAL\",\"resourceId\":\"$GRAPH_SP\",\"appRoleId\":\"$ROLE_ID\"}" -o none
  echo "$ROLE: granted"
done
echo "Done. Tokens issued from now on carry the roles (a warm function app may keep an older token for up to an hour)."
