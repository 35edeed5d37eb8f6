package remediate

import (
	"fmt"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/intune"
)

// eligibility is the one rule for whether a device can run an on-demand
// remediation addressed through coll: "" when it can, else the reason it
// is skipped and a message. syncedAfter, when set, also skips devices that
// last synced before it.
func eligibility(d *intune.Device, coll intune.Collection, syncedAfter time.Time) (reason, message string) {
	switch {
	case !isWindows(d):
		return ReasonNotWindows, fmt.Sprintf("operatingSystem is %q; remediations run on Windows only", d.OperatingSystem)
	case d.ManagementState != "" && d.ManagementState != "managed":
		return ReasonNotManaged, fmt.Sprintf("managementState is %q; Intune sends actions only to managed devices", d.ManagementState)
	case coll == intune.CoManagedDevices && !strings.HasPrefix(d.ManagementAgent, "configurationManagerClient"):
		return ReasonNotCoManaged, fmt.Sprintf("managementAgent is %q, not co-managed; list it under managed_devices", d.ManagementAgent)
	case d.JoinType == "azureADRegistered":
		return ReasonEntraRegistered, "the device is only Entra registered; remediations need Entra joined or hybrid joined devices"
	case !syncedAfter.IsZero() && d.LastSyncDateTime.Before(syncedAfter):
		return ReasonStale, fmt.Sprintf("last synced %s, longer ago than last_sync_within; it would not receive the trigger", d.LastSyncDateTime.UTC().Format(time.RFC3339))
	}
	return "", ""
}

// eligible reports whether a device a selector found may run a
// remediation (staleness aside: that is checked with the selector's
// last_sync_within when the run is validated).
func eligible(d *intune.Device) bool {
	reason, _ := eligibility(d, intune.ManagedDevices, time.Time{})
	return reason == ""
}

// isWindows reports whether Intune says the device runs Windows.
func isWindows(d *intune.Device) bool {
	return strings.Contains(strings.ToLower(d.OperatingSystem), "windows")
}
