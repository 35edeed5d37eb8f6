package remediate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/remediator/remediator/internal/intune"
)

// TestEligibility is the one table of which devices can run an on-demand
// remediation: listed devices, filters' results and workers all use it.
func TestEligibility(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ok := intune.Device{OperatingSystem: "Windows", JoinType: "azureADJoined", ManagementAgent: "mdm", ManagementState: "managed", LastSyncDateTime: now}
	with := func(f func(*intune.Device)) intune.Device { d := ok; f(&d); return d }
	for _, tc := range []struct {
		name   string
		d      intune.Device
		coll   intune.Collection
		after  time.Time
		reason string
	}{
		{"managed Windows device", ok, intune.ManagedDevices, time.Time{}, ""},
		{"management state unknown", with(func(d *intune.Device) { d.ManagementState = "" }), intune.ManagedDevices, time.Time{}, ""},
		{"hybrid joined", with(func(d *intune.Device) { d.JoinType = "hybridAzureADJoined" }), intune.ManagedDevices, time.Time{}, ""},
		{"macOS", with(func(d *intune.Device) { d.OperatingSystem = "macOS" }), intune.ManagedDevices, time.Time{}, ReasonNotWindows},
		{"retire pending", with(func(d *intune.Device) { d.ManagementState = "retirePending" }), intune.ManagedDevices, time.Time{}, ReasonNotManaged},
		{"Entra registered", with(func(d *intune.Device) { d.JoinType = "azureADRegistered" }), intune.ManagedDevices, time.Time{}, ReasonEntraRegistered},
		{"listed as co-managed but MDM only", ok, intune.CoManagedDevices, time.Time{}, ReasonNotCoManaged},
		{"co-managed", with(func(d *intune.Device) { d.ManagementAgent = "configurationManagerClientMdm" }), intune.CoManagedDevices, time.Time{}, ""},
		{"stale", with(func(d *intune.Device) { d.LastSyncDateTime = now.Add(-48 * time.Hour) }), intune.ManagedDevices, now.Add(-24 * time.Hour), ReasonStale},
		{"synced in time", ok, intune.ManagedDevices, now.Add(-24 * time.Hour), ""},
	} {
		reason, msg := eligibility(&tc.d, tc.coll, tc.after)
		assert.Equal(t, tc.reason, reason, tc.name)
		assert.Equal(t, reason != "", msg != "", "%s: a reason comes with a message", tc.name)
		if tc.after.IsZero() {
			assert.Equal(t, tc.reason == "" || tc.reason == ReasonNotCoManaged, eligible(&tc.d), "%s: selectors use the same rule", tc.name)
		}
	}
}
