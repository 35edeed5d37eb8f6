package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeAz answers the az calls the permissions script makes: the cloud's
// Graph host, Graph's service principal and app role ids, and the
// principal's role assignments in two pages. It logs every call.
const fakeAz = `#!/usr/bin/env bash
echo "$*" >> "$AZ_LOG"
case "$*" in
  "cloud show"*) echo "https://graph.microsoft.us/" ;;
  "ad sp show --id 00000003-0000-0000-c000-000000000000 --query id -o tsv") echo "graph-sp" ;;
  *"appRoles[?value=="*) role=$(sed -n "s/.*value=='\([^']*\)'.*/\1/p" <<<"$*"); echo "id-$role" ;;
  "rest -m GET"*skiptoken=2*) printf 'none\tid-DeviceManagementScripts.Read.All\n' ;;
  "rest -m GET"*) host=$(sed -n 's#.*-u https://\([^/]*\)/.*#\1#p' <<<"$*")
     printf 'https://%s/v1.0/servicePrincipals/x/appRoleAssignments?$skiptoken=2\tid-DeviceManagementManagedDevices.Read.All id-Other\n' "$host" ;;
  "rest -m POST"*) ;;
  *) echo "unexpected az $*" >&2; exit 3 ;;
esac
`

func runGrant(t *testing.T, args ...string) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "az"), []byte(fakeAz), 0o755))
	logFile := filepath.Join(dir, "az.log")
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "deploy/grant-graph-permissions.sh"), "11111111-0000-4000-8000-000000000001"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "AZ_LOG="+logFile)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	calls, _ := os.ReadFile(logFile)
	return string(out), strings.Split(strings.TrimSpace(string(calls)), "\n")
}

// TestGrantPermissions: the script reads every page of what is granted,
// grants only what is missing, has a flag for the configuration-read
// permission, and talks to the Graph host of the cloud az is set to, or the
// one given.
func TestGrantPermissions(t *testing.T) {
	t.Parallel()
	out, calls := runGrant(t, "--config-read")
	assert.Contains(t, out, "DeviceManagementManagedDevices.Read.All: already granted")
	assert.Contains(t, out, "DeviceManagementScripts.Read.All: already granted", "granted on the second page")
	assert.Contains(t, out, "DeviceManagementManagedDevices.PrivilegedOperations.All: granted")
	assert.Contains(t, out, "DeviceManagementConfiguration.Read.All: granted")
	assert.NotContains(t, out, "GroupMember.Read.All")
	posts, gets := 0, 0
	for _, c := range calls {
		if strings.HasPrefix(c, "rest ") {
			assert.Contains(t, c, "-u https://graph.microsoft.us/v1.0/", "the cloud's own Graph host")
		}
		if strings.HasPrefix(c, "rest -m POST") {
			posts++
		}
		if strings.HasPrefix(c, "rest -m GET") {
			gets++
		}
	}
	assert.Equal(t, 2, posts, "only the missing roles")
	assert.Equal(t, 2, gets, "both pages")

	out, calls = runGrant(t, "--groups", "--graph-host", "dod-graph.microsoft.us")
	assert.Contains(t, out, "GroupMember.Read.All: granted")
	assert.Contains(t, out, "Device.Read.All: granted")
	for _, c := range calls {
		assert.False(t, strings.HasPrefix(c, "cloud show"), "the host given is used as it is")
		if strings.HasPrefix(c, "rest ") {
			assert.Contains(t, c, "-u https://dod-graph.microsoft.us/v1.0/")
		}
	}
}
