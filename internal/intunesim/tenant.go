package intunesim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Device is one managed device of the simulated tenant.
type Device struct {
	ID               string
	DeviceName       string
	OperatingSystem  string
	OSVersion        string
	JoinType         string
	ManagementAgent  string
	ManagementState  string
	LastSyncDateTime time.Time
	AzureADDeviceID  string
	OwnerType        string
	// CoManaged marks a device managed by both Intune and Configuration
	// Manager; only these are reachable under /comanagedDevices.
	CoManaged bool
}

// Script is a remediation script package (deviceHealthScript).
type Script struct {
	ID                   string
	DisplayName          string
	Publisher            string
	Version              string
	ScriptType           string // deviceHealthScript or managedInstallerScript
	LastModifiedDateTime time.Time
}

// Group is an Entra ID group; Members are the Entra device ids
// (azureADDeviceId) of its transitive device members.
type Group struct {
	ID          string
	DisplayName string
	Members     []string
}

// Tenant is the data a Server serves. Devices are kept sorted by ID so
// paging is stable.
type Tenant struct {
	Devices []Device
	Scripts []Script
	Groups  []Group
}

// GenerateOptions shapes a generated tenant.
type GenerateOptions struct {
	Devices int       // number of devices
	Scripts int       // number of remediation scripts; default 5
	Now     time.Time // reference time for sync and script dates; default the clock's now
}

// Generate builds a realistic tenant deterministically from seed (dates
// relative to opts.Now): about 70%
// Windows devices (a sixth of them co-managed, a few Entra-registered), the
// rest macOS, iOS and Android; about 8% stale devices that have not synced
// for weeks; a handful of duplicate device names; and remediation scripts of
// which the last is a managedInstallerScript.
func Generate(seed uint64, opts GenerateOptions) *Tenant {
	if opts.Scripts <= 0 {
		opts.Scripts = 5
	}
	if opts.Now.IsZero() {
		// Relative to the clock, never to a fixed date: staleness is
		// judged by the clock, and a fixed date makes every device stale
		// once enough weeks have passed.
		opts.Now = time.Now().UTC().Truncate(time.Minute)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t := &Tenant{}
	for i := range opts.Devices {
		d := Device{
			ID:              guid(r),
			AzureADDeviceID: guid(r),
			ManagementState: "managed",
			OwnerType:       "company",
		}
		switch p := r.IntN(100); {
		case p < 70:
			d.OperatingSystem = "Windows"
			d.OSVersion = pick(r, "10.0.19045.5011", "10.0.22631.4317", "10.0.26100.2033")
			d.DeviceName = fmt.Sprintf("PC-%05d", i)
			d.JoinType = pick(r, "azureADJoined", "azureADJoined", "hybridAzureADJoined")
			d.ManagementAgent = "mdm"
			switch q := r.IntN(100); {
			case q < 16:
				d.CoManaged = true
				d.ManagementAgent = "configurationManagerClientMdm"
				d.JoinType = "hybridAzureADJoined"
			case q < 19:
				d.JoinType = "azureADRegistered"
				d.OwnerType = "personal"
			}
		case p < 80:
			d.OperatingSystem, d.OSVersion, d.DeviceName = "macOS", "15.1", fmt.Sprintf("MAC-%05d", i)
			d.JoinType, d.ManagementAgent = "unknown", "mdm"
		case p < 90:
			d.OperatingSystem, d.OSVersion, d.DeviceName = "iOS", "18.1", fmt.Sprintf("IPHONE-%05d", i)
			d.JoinType, d.ManagementAgent = "unknown", "mdm"
		default:
			d.OperatingSystem, d.OSVersion, d.DeviceName = "Android", "15.0", fmt.Sprintf("ANDROID-%05d", i)
			d.JoinType, d.ManagementAgent = "unknown", "googleCloudDevicePolicyController"
		}
		if r.IntN(100) < 8 {
			d.LastSyncDateTime = opts.Now.Add(-time.Duration(30+r.IntN(60)) * 24 * time.Hour)
		} else {
			d.LastSyncDateTime = opts.Now.Add(-time.Duration(r.IntN(72*60)) * time.Minute)
		}
		d.LastSyncDateTime = d.LastSyncDateTime.Truncate(time.Second)
		t.Devices = append(t.Devices, d)
	}
	// Duplicate names: reimaged machines keep their name but get a new record.
	for i := 0; i+50 < len(t.Devices); i += 97 {
		t.Devices[i+50].DeviceName = t.Devices[i].DeviceName
	}
	for i := range opts.Scripts {
		s := Script{
			ID:                   guid(r),
			DisplayName:          fmt.Sprintf("Remediation %d", i+1),
			Publisher:            "Contoso IT",
			Version:              fmt.Sprintf("%d", 1+r.IntN(5)),
			ScriptType:           "deviceHealthScript",
			LastModifiedDateTime: opts.Now.Add(-time.Duration(r.IntN(90*24)) * time.Hour).Truncate(time.Second),
		}
		if i == opts.Scripts-1 && opts.Scripts > 1 {
			s.ScriptType = "managedInstallerScript"
			s.DisplayName = "Managed installer"
		}
		t.Scripts = append(t.Scripts, s)
	}
	// Groups: a pilot ring of every tenth Windows device, plus two Entra
	// devices Intune does not manage; and an empty group.
	pilot := Group{ID: guid(r), DisplayName: "Windows pilot ring"}
	n := 0
	for _, d := range t.Devices {
		if d.OperatingSystem == "Windows" {
			if n%10 == 0 {
				pilot.Members = append(pilot.Members, d.AzureADDeviceID)
			}
			n++
		}
	}
	pilot.Members = append(pilot.Members, guid(r), guid(r))
	t.Groups = append(t.Groups, pilot, Group{ID: guid(r), DisplayName: "Empty group"})
	t.sort()
	return t
}

func (t *Tenant) sort() {
	slices.SortFunc(t.Devices, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
}

// Windows returns the tenant's Windows devices, optionally only co-managed
// ones.
func (t *Tenant) Windows(coManagedOnly bool) []Device {
	var out []Device
	for _, d := range t.Devices {
		if d.OperatingSystem == "Windows" && (!coManagedOnly || d.CoManaged) {
			out = append(out, d)
		}
	}
	return out
}

// NonWindows returns the tenant's devices that are not Windows.
func (t *Tenant) NonWindows() []Device {
	var out []Device
	for _, d := range t.Devices {
		if d.OperatingSystem != "Windows" {
			out = append(out, d)
		}
	}
	return out
}

// RemediationScript returns the first script of type deviceHealthScript.
func (t *Tenant) RemediationScript() Script {
	for _, s := range t.Scripts {
		if s.ScriptType == "deviceHealthScript" {
			return s
		}
	}
	return Script{}
}

func pick(r *rand.Rand, options ...string) string { return options[r.IntN(len(options))] }

func guid(r *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
