// Package intune holds the Intune objects remediator decides on, as plain
// Go types with no SDK behind them: devices, scripts, run states, group
// members, pages of them, and a failed Graph call. The Graph client
// (internal/graph) converts to them at its edge, so that the domain and
// everything above it compile and test without the Graph SDK.
package intune

import (
	"regexp"
	"strings"
	"time"
)

// Collection is where a device is addressed for the trigger.
type Collection string

// The two collections the trigger is available on.
const (
	ManagedDevices   Collection = "managedDevices"
	CoManagedDevices Collection = "comanagedDevices"
)

// DefaultCallTimeout is GRAPH_CALL_TIMEOUT: one Graph HTTP attempt's
// bound.
const DefaultCallTimeout = 30 * time.Second

// DefaultMaxResponseBytes is GRAPH_MAX_RESPONSE_MB in bytes: the largest
// Graph answer read (a page of 1,000 devices is about half a megabyte).
const DefaultMaxResponseBytes = 16 << 20

// MaxBatch is Graph's limit of requests in one $batch.
const MaxBatch = 20

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsGUID reports whether s is a GUID (device, script, group, tenant and
// client ids are).
func IsGUID(s string) bool { return guidRE.MatchString(s) }

// Device holds the managed-device properties remediator decides on.
type Device struct {
	ID               string    `json:"id"`
	DeviceName       string    `json:"deviceName"`
	OperatingSystem  string    `json:"operatingSystem"`
	OSVersion        string    `json:"osVersion"`
	JoinType         string    `json:"joinType"`
	ManagementAgent  string    `json:"managementAgent"`
	ManagementState  string    `json:"managementState"`
	LastSyncDateTime time.Time `json:"lastSyncDateTime"`
	AzureADDeviceID  string    `json:"azureADDeviceId"`
	// ActionResults are the device's remote actions as Intune records
	// them (only read by single-device lookups).
	ActionResults []ActionResult `json:"deviceActionResults,omitempty"`
}

// ActionResult is one deviceActionResult of a managed device. Intune keeps
// the last action of each kind.
type ActionResult struct {
	ActionName    string    `json:"actionName"`
	ActionState   string    `json:"actionState"`
	StartDateTime time.Time `json:"startDateTime"`
}

// OnDemandRemediationSince reports whether Intune recorded an on-demand
// remediation of the device started at or after t. The exact actionName
// Intune uses is not documented (community reports differ), so any action
// named like a remediation counts.
func (d *Device) OnDemandRemediationSince(t time.Time) bool {
	for _, a := range d.ActionResults {
		if strings.Contains(strings.ToLower(a.ActionName), "remediation") && !a.StartDateTime.Before(t) {
			return true
		}
	}
	return false
}

// Lookup is the answer for one device of a $batch lookup: the device, or
// Err (404 for a device that does not exist).
type Lookup struct {
	ID     string
	Device *Device
	Err    *Error
}

// Page is one page of a device list.
type Page struct {
	Devices []Device
	// Count is @odata.count, the size of the whole filtered list (-1 when
	// the service did not say).
	Count int
	// NextLink is the absolute URL of the next page, "" on the last.
	NextLink string
}

// Script is what remediator checks of a remediation script package.
type Script struct {
	ID                   string    `json:"id"`
	DisplayName          string    `json:"displayName"`
	Version              string    `json:"version"`
	Type                 string    `json:"deviceHealthScriptType"`
	LastModifiedDateTime time.Time `json:"lastModifiedDateTime"`
}

// GroupMember is a device that is a transitive member of an Entra group.
type GroupMember struct {
	// AzureADDeviceID is the Entra device id (managedDevice.azureADDeviceId).
	AzureADDeviceID string `json:"deviceId"`
	DisplayName     string `json:"displayName"`
}

// GroupPage is one page of a group's device members.
type GroupPage struct {
	Members  []GroupMember
	NextLink string
}

// RunState is one device's deviceHealthScriptDeviceState: what the
// detection and remediation scripts last did on it.
type RunState struct {
	DetectionState                       string    `json:"detectionState"`
	RemediationState                     string    `json:"remediationState"`
	LastStateUpdateDateTime              time.Time `json:"lastStateUpdateDateTime"`
	PreRemediationDetectionScriptOutput  string    `json:"preRemediationDetectionScriptOutput"`
	PreRemediationDetectionScriptError   string    `json:"preRemediationDetectionScriptError"`
	RemediationScriptError               string    `json:"remediationScriptError"`
	PostRemediationDetectionScriptOutput string    `json:"postRemediationDetectionScriptOutput"`
	PostRemediationDetectionScriptError  string    `json:"postRemediationDetectionScriptError"`
	ManagedDevice                        struct {
		ID string `json:"id"`
	} `json:"managedDevice"`
}

// RunStatePage is one page of a script's run states.
type RunStatePage struct {
	States   []RunState
	NextLink string
}

// Response describes an accepted call.
type Response struct {
	Status    int
	RequestID string
}
