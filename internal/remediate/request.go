package remediate

import (
	"fmt"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
)

// Target is one device and the script to run on it.
type Target struct {
	DeviceID       string `json:"device_id"`
	ScriptPolicyID string `json:"script_policy_id"`
}

// Timeouts bounds a run.
type Timeouts struct {
	// Invoke is a Go duration ("30s", "2h45m") the whole run must fit in.
	Invoke string `json:"invoke,omitempty"`
}

// Request is a remediation request; field names follow the Terraform
// action remediator reproduces.
type Request struct {
	ManagedDevices        []Target  `json:"managed_devices,omitempty"`
	CoManagedDevices      []Target  `json:"comanaged_devices,omitempty"`
	IgnorePartialFailures bool      `json:"ignore_partial_failures"`
	ValidateDeviceExists  *bool     `json:"validate_device_exists,omitempty"`
	Timeouts              *Timeouts `json:"timeouts,omitempty"`
	// Rollout, for an asynchronous run, triggers its devices in waves
	// with a gate between them.
	Rollout *Rollout `json:"rollout,omitempty"`
	DryRun  bool     `json:"dry_run"`
	// TenantID runs the request in another tenant (multi-tenant
	// deployments); empty is the default tenant.
	TenantID string `json:"tenant_id,omitempty"`
	// Targets select devices by filter, name or group.
	Targets []Selector `json:"targets,omitempty"`
	// ConfirmDeviceCount confirms a run larger than MAX_FLEET_PERCENT of
	// the tenant's Windows devices: it must equal the resolved count.
	ConfirmDeviceCount *int `json:"confirm_device_count,omitempty"`
	// Mode is sync, async or auto (default): auto answers 202 and hands
	// the run to workers when it would not fit the synchronous budget.
	Mode string `json:"mode,omitempty"`
}

// Selector picks devices for one script: by OData filter, by device name,
// by Entra group, or several of these together.
type Selector struct {
	ScriptPolicyID   string   `json:"script_policy_id"`
	Filter           string   `json:"filter,omitempty"`
	DeviceNames      []string `json:"device_names,omitempty"`
	GroupIDs         []string `json:"group_ids,omitempty"`
	ExcludeDeviceIDs []string `json:"exclude_device_ids,omitempty"`
	// LastSyncWithin skips devices that have not synced for longer (a Go
	// duration such as "168h").
	LastSyncWithin string `json:"last_sync_within,omitempty"`
	// OnDuplicateName is error (default), most_recent or all.
	OnDuplicateName string `json:"on_duplicate_name,omitempty"`
}

// MaxProblems bounds the problems an answer lists: a 1 MiB body of empty
// device objects has a hundred thousand, and listing them all would take
// hundreds of megabytes to answer one bad request.
const MaxProblems = 100

// invalid is the error of a request with problems (at least one): an
// invalid_request listing the first MaxProblems of them.
func invalid(problems []fault.FieldError) *fault.Error {
	return invalidOf(problems, len(problems))
}

// invalidOf is invalid for the listed problems of total.
func invalidOf(problems []fault.FieldError, total int) *fault.Error {
	e := &fault.Error{Code: fault.InvalidRequest, Details: problems, Total: total}
	if len(problems) > MaxProblems {
		e.Details = problems[:MaxProblems:MaxProblems]
	}
	parts := make([]string, len(e.Details))
	for i, d := range e.Details {
		parts[i] = d.Field + ": " + d.Message
		if d.Field == "" {
			parts[i] = d.Message
		}
	}
	e.Message = "invalid request: " + strings.Join(parts, "; ")
	if more := e.Total - len(e.Details); more > 0 {
		e.Message += fmt.Sprintf("; and %d more problems (%d in all; the first %d are listed)", more, e.Total, len(e.Details))
	}
	return e
}

// Item is one device of a validated request.
type Item struct {
	Collection     intune.Collection
	DeviceID       string
	ScriptPolicyID string
	// Field is the JSON path of the entry in the request, for messages.
	Field string
	// Device is the device as a selector found it (nil for explicit
	// entries, which are looked up).
	Device *intune.Device
	// SyncedAfter, when set, skips the device as stale if it last synced
	// before it.
	SyncedAfter time.Time
}

// Plan is a validated, de-duplicated request.
type Plan struct {
	Items                 []Item
	IgnorePartialFailures bool
	ValidateDevices       bool
	DryRun                bool
	// Invoke is the run's own time limit; 0 means none.
	Invoke   time.Duration
	Warnings []string
	// TenantID is the tenant to act in, "" for the default.
	TenantID string
	// Targets are the validated selectors, resolved when the run starts.
	Targets []Selection
	// ConfirmDeviceCount is the request's confirmation, nil if none.
	ConfirmDeviceCount *int
	// Mode is ModeSync, ModeAsync or ModeAuto.
	Mode string
	// MaxDevices, when set, caps this run's devices below the engine's
	// MAX_DEVICES_PER_RUN (a caller's policy); CapName names the cap in
	// messages.
	MaxDevices int
	CapName    string
	// Rollout is the validated rollout, nil for none.
	Rollout *RolloutPlan
}

// ScriptIDs lists the plan's scripts once each, in order of appearance.
func (p Plan) ScriptIDs() []string { return p.scriptIDs() }

// Run modes.
const (
	ModeSync  = "sync"
	ModeAsync = "async"
	ModeAuto  = "auto"
)

// Selection is a validated Selector.
type Selection struct {
	Selector
	Field          string
	LastSyncWithin time.Duration
}

// Limits are the operator's bounds on requests.
type Limits struct {
	// MaxDevices caps the devices of one request (after de-duplication).
	MaxDevices int
	// MaxTargets, MaxDeviceNames and MaxGroupIDs cap a request's
	// selectors (MAX_TARGETS, MAX_DEVICE_NAMES and MAX_GROUP_IDS, the names
	// and groups counted over all its targets); 0 takes the defaults.
	MaxTargets, MaxDeviceNames, MaxGroupIDs int
}

// The defaults of Limits' selector caps: each name costs a Graph read
// (up to 20 names; more read the Windows device list once), each group
// its member pages, all of them spent from the tenant's shared read
// budget.
const (
	DefaultMaxTargets     = 20
	DefaultMaxDeviceNames = 1000
	DefaultMaxGroupIDs    = 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxTargets <= 0 {
		l.MaxTargets = DefaultMaxTargets
	}
	if l.MaxDeviceNames <= 0 {
		l.MaxDeviceNames = DefaultMaxDeviceNames
	}
	if l.MaxGroupIDs <= 0 {
		l.MaxGroupIDs = DefaultMaxGroupIDs
	}
	return l
}

// Validate checks req and returns its plan. All problems are reported in
// one *fault.Error.
func Validate(req Request, lim Limits) (Plan, error) {
	var p problems
	plan := Plan{
		IgnorePartialFailures: req.IgnorePartialFailures,
		ValidateDevices:       req.ValidateDeviceExists == nil || *req.ValidateDeviceExists,
		DryRun:                req.DryRun,
		TenantID:              req.TenantID,
		ConfirmDeviceCount:    req.ConfirmDeviceCount,
	}
	lim = lim.withDefaults()
	validateRun(req, &plan, &p)
	validateTargets(req.Targets, lim, &plan, &p)
	validateInvoke(req.Timeouts, &plan, &p)
	validateDevices(req, &plan, &p)
	validateRollout(req.Rollout, &plan, &p)
	if lim.MaxDevices > 0 && len(plan.Items) > lim.MaxDevices {
		p.addf("managed_devices", "%d devices in one request, more than the limit of %d (MAX_DEVICES_PER_RUN); split the request", len(plan.Items), lim.MaxDevices)
	}
	if p.total > 0 {
		return Plan{}, p.err()
	}
	return plan, nil
}

// addf adds a problem at field, its message formatted.
func (p *problems) addf(field, format string, args ...any) {
	p.add(field, fmt.Sprintf(format, args...))
}

// validateRun checks what the request says of the run as a whole: its
// mode, its tenant, and that it selects something.
func validateRun(req Request, plan *Plan, p *problems) {
	switch plan.Mode = strings.ToLower(req.Mode); plan.Mode {
	case "":
		plan.Mode = ModeAuto
	case ModeSync, ModeAsync, ModeAuto:
	default:
		p.addf("mode", "%q is not a mode: use sync, async or auto", req.Mode)
	}
	if req.TenantID != "" && !intune.IsGUID(req.TenantID) {
		p.addf("tenant_id", "%q is not a tenant id (a GUID)", req.TenantID)
	}
	if len(req.ManagedDevices) == 0 && len(req.CoManagedDevices) == 0 && len(req.Targets) == 0 {
		p.add("managed_devices", "at least one of managed_devices, comanaged_devices or targets must select a device")
	}
}

// validateInvoke checks timeouts.invoke, the run's own time.
func validateInvoke(t *Timeouts, plan *Plan, p *problems) {
	if t == nil || t.Invoke == "" {
		return
	}
	d, ok := ParseDuration(t.Invoke)
	switch {
	case !ok:
		p.addf("timeouts.invoke", "%q is not a duration such as \"30s\", \"2h45m\" or \"PT2M\"", t.Invoke)
	case d <= 0:
		p.add("timeouts.invoke", "must be positive")
	default:
		plan.Invoke = d
	}
}

// validateTargets checks the selectors, within the request's bounds on
// targets, device names and groups.
func validateTargets(targets []Selector, lim Limits, plan *Plan, p *problems) {
	names, groups := 0, 0
	for i, sel := range targets {
		if i == lim.MaxTargets {
			p.addf(fmt.Sprintf("targets[%d]", i), "is past the %d targets a request may hold (MAX_TARGETS); split the request", lim.MaxTargets)
			return
		}
		if names += len(sel.DeviceNames); names > lim.MaxDeviceNames {
			p.addf(fmt.Sprintf("targets[%d].device_names", i), "brings the request's device names past %d (MAX_DEVICE_NAMES); use a filter or a group, or split the request", lim.MaxDeviceNames)
			return
		}
		if groups += len(sel.GroupIDs); groups > lim.MaxGroupIDs {
			p.addf(fmt.Sprintf("targets[%d].group_ids", i), "brings the request's groups past %d (MAX_GROUP_IDS); split the request", lim.MaxGroupIDs)
			return
		}
		plan.Targets = append(plan.Targets, validateSelector(sel, fmt.Sprintf("targets[%d]", i), p))
	}
}

// validateSelector checks one selector at field.
func validateSelector(sel Selector, field string, p *problems) Selection {
	t := Selection{Selector: sel, Field: field}
	if !intune.IsGUID(sel.ScriptPolicyID) {
		p.addf(field+".script_policy_id", "%q is not a GUID", sel.ScriptPolicyID)
	}
	if strings.TrimSpace(sel.Filter) == "" && len(sel.DeviceNames) == 0 && len(sel.GroupIDs) == 0 {
		p.add(field, "needs at least one of filter, device_names or group_ids")
	}
	if len(sel.Filter) > 2000 {
		p.add(field+".filter", "is longer than 2000 characters")
	}
	for j, n := range sel.DeviceNames {
		if strings.TrimSpace(n) == "" {
			p.add(fmt.Sprintf("%s.device_names[%d]", field, j), "is empty")
		}
	}
	for j, g := range sel.GroupIDs {
		if !intune.IsGUID(g) {
			p.addf(fmt.Sprintf("%s.group_ids[%d]", field, j), "%q is not a group id (a GUID)", g)
		}
	}
	for j, d := range sel.ExcludeDeviceIDs {
		if !intune.IsGUID(d) {
			p.addf(fmt.Sprintf("%s.exclude_device_ids[%d]", field, j), "%q is not a GUID", d)
		}
	}
	if sel.LastSyncWithin != "" {
		d, ok := ParseDuration(sel.LastSyncWithin)
		if !ok || d <= 0 {
			p.addf(field+".last_sync_within", "%q is not a positive duration such as \"168h\", \"7d\" or \"P7D\"", sel.LastSyncWithin)
		}
		t.LastSyncWithin = d
	}
	switch sel.OnDuplicateName {
	case "", "error", "most_recent", "all":
	default:
		p.addf(field+".on_duplicate_name", "%q must be error, most_recent or all", sel.OnDuplicateName)
	}
	return t
}

// validateDevices checks the listed devices: ids, scripts, and a device
// listed twice (once, in one collection, with one script).
func validateDevices(req Request, plan *Plan, p *problems) {
	type seenAt struct {
		field, script string
		coll          intune.Collection
	}
	seen := map[string]seenAt{}
	lists := []struct {
		name    string
		coll    intune.Collection
		targets []Target
	}{{"managed_devices", intune.ManagedDevices, req.ManagedDevices}, {"comanaged_devices", intune.CoManagedDevices, req.CoManagedDevices}}
	for _, l := range lists {
		for i, t := range l.targets {
			field := fmt.Sprintf("%s[%d]", l.name, i)
			ok := true
			if !intune.IsGUID(t.DeviceID) {
				p.addf(field+".device_id", "%q is not a GUID", t.DeviceID)
				ok = false
			}
			if !intune.IsGUID(t.ScriptPolicyID) {
				p.addf(field+".script_policy_id", "%q is not a GUID", t.ScriptPolicyID)
				ok = false
			}
			if !ok {
				continue
			}
			key := strings.ToLower(t.DeviceID)
			if prev, dup := seen[key]; dup {
				switch {
				case prev.coll != l.coll:
					p.addf(field+".device_id", "device %s is also listed at %s; list each device in one collection only", t.DeviceID, prev.field)
				case !strings.EqualFold(prev.script, t.ScriptPolicyID):
					p.addf(field+".script_policy_id", "device %s already runs script %s at %s; Intune runs one on-demand remediation per device at a time and a second one overwrites the first", t.DeviceID, prev.script, prev.field)
				default:
					plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s repeats %s (device %s, same script): triggered once", field, prev.field, t.DeviceID))
				}
				continue
			}
			seen[key] = seenAt{field, t.ScriptPolicyID, l.coll}
			plan.Items = append(plan.Items, Item{Collection: l.coll, DeviceID: t.DeviceID, ScriptPolicyID: t.ScriptPolicyID, Field: field})
		}
	}
}
