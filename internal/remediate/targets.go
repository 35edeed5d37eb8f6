package remediate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
)

// nameQueryLimit is the most device names looked up one $filter query
// each; more names are matched against one read of the Windows devices.
const nameQueryLimit = 20

// windowsFilter is the one filter every Intune tenant honours.
const windowsFilter = "operatingSystem eq 'Windows'"

// resolve turns the plan's selectors into items. Names that match no
// device come back as skipped results (they have no device id); problems
// (an ambiguous name under on_duplicate_name=error, a missing group, a
// filter Intune refused) reject the run.
func (x *execution) resolve() ([]Item, []DeviceResult, []fault.FieldError) {
	r := &resolution{x: x}
	now := time.Now()
	for _, t := range x.plan.Targets {
		pk := &picking{resolution: r, t: t, picked: map[string]intune.Device{}}
		for _, by := range []func() string{pk.byFilter, pk.byNames, pk.byGroups} {
			if field := by(); field != "" {
				return nil, nil, append(r.problems, x.capProblem(field))
			}
		}
		pk.finish(now)
	}
	return r.items, r.misses, r.problems
}

// resolution is the selectors' resolution under way: what they picked so
// far, the devices named but not found, the problems, and the tenant's
// Windows devices, read once when a name or a group needs them.
type resolution struct {
	x        *execution
	items    []Item
	misses   []DeviceResult
	problems []fault.FieldError
	index    *windowsIndex
}

// windows is the tenant's Windows devices, read on first use.
func (r *resolution) windows() (*windowsIndex, error) {
	if r.index == nil {
		idx, err := r.x.readWindows()
		if err != nil {
			return nil, err
		}
		r.index = idx
	}
	return r.index, nil
}

// problem records a problem at field.
func (r *resolution) problem(field, msg string) {
	r.problems = append(r.problems, fault.FieldError{Field: field, Message: msg})
}

// picking is one selector's devices, picked by filter, names and groups.
// Each by* method returns the field at which the run's device cap was
// passed ("" while under it).
type picking struct {
	*resolution
	t                         Selection
	picked                    map[string]intune.Device
	excludedFilter, unmanaged int
}

// overCap reports whether the devices picked so far pass the cap.
func (pk *picking) overCap() bool { return pk.x.overCap(len(pk.items) + len(pk.picked)) }

// byFilter picks the eligible devices the selector's OData filter matches.
func (pk *picking) byFilter() string {
	f := strings.TrimSpace(pk.t.Filter)
	if f == "" {
		return ""
	}
	field := pk.t.Field + ".filter"
	err := pk.x.eachDevice(f, func(devs []intune.Device) bool {
		for _, d := range devs {
			// Intune ignores filters it does not support and reads ne as
			// eq: only eligible Windows devices may come out of a filter.
			if !eligible(&d) {
				pk.excludedFilter++
				continue
			}
			pk.picked[strings.ToLower(d.ID)] = d
			if pk.overCap() {
				return false // one device past the cap is enough to refuse
			}
		}
		return true
	})
	switch {
	case pk.x.tooMany:
		return field
	case errors.Is(err, errTooManyListed):
		pk.problem(field, "reading the filter's devices stopped: "+err.Error())
	case err != nil:
		pk.problem(field, "Intune refused the filter: "+err.Error())
	}
	return ""
}

// byNames picks the devices the selector names, as on_duplicate_name
// says for a name several devices carry.
func (pk *picking) byNames() string {
	t := pk.t
	for j, name := range t.DeviceNames {
		field := fmt.Sprintf("%s.device_names[%d]", t.Field, j)
		matches, err := pk.x.byName(name, len(t.DeviceNames), pk.windows)
		if err != nil {
			pk.problem(field, "the name could not be looked up: "+err.Error())
			continue
		}
		switch {
		case len(matches) == 0:
			pk.misses = append(pk.misses, DeviceResult{DeviceName: name, ScriptPolicyID: t.ScriptPolicyID, Collection: string(intune.ManagedDevices),
				Outcome: Skipped, Reason: ReasonNotFound, Message: fmt.Sprintf("no managed device is named %q (%s)", name, field)})
		case len(matches) > 1 && (t.OnDuplicateName == "" || t.OnDuplicateName == "error"):
			var c []string
			for _, d := range matches {
				c = append(c, fmt.Sprintf("%s (last sync %s)", d.ID, d.LastSyncDateTime.UTC().Format(time.RFC3339)))
			}
			pk.problem(field, fmt.Sprintf("%d devices are named %q: %s; list the device_id, or set on_duplicate_name to most_recent or all",
				len(matches), name, strings.Join(c, ", ")))
		case len(matches) > 1 && t.OnDuplicateName == "most_recent":
			newest := slices.MaxFunc(matches, func(a, b intune.Device) int { return a.LastSyncDateTime.Compare(b.LastSyncDateTime) })
			pk.picked[strings.ToLower(newest.ID)] = newest
		default:
			for _, d := range matches {
				pk.picked[strings.ToLower(d.ID)] = d
			}
		}
		if pk.overCap() {
			return field
		}
	}
	return ""
}

// byGroups picks the Windows devices Intune manages among the members of
// the selector's groups.
func (pk *picking) byGroups() string {
	for j, g := range pk.t.GroupIDs {
		field := fmt.Sprintf("%s.group_ids[%d]", pk.t.Field, j)
		var idx *windowsIndex
		err := pk.x.eachGroupPage(g, func(members []intune.GroupMember) bool {
			if len(members) == 0 {
				return true
			}
			var err error
			if idx == nil {
				if idx, err = pk.windows(); err != nil {
					return false
				}
			}
			for _, m := range members {
				d, ok := idx.byEntraID[strings.ToLower(m.AzureADDeviceID)]
				if !ok {
					pk.unmanaged++
					continue
				}
				pk.picked[strings.ToLower(d.ID)] = d
				if pk.overCap() {
					return false
				}
			}
			return true
		})
		if pk.x.tooMany {
			return field
		}
		if err != nil {
			pk.problem(field, "the group's devices could not be read: "+err.Error())
		}
	}
	return ""
}

// finish drops the excluded devices, says what was left out, and adds the
// selector's devices to the run, in id order.
func (pk *picking) finish(now time.Time) {
	t := pk.t
	for _, id := range t.ExcludeDeviceIDs {
		delete(pk.picked, strings.ToLower(id))
	}
	if pk.excludedFilter > 0 {
		pk.x.warn(fmt.Sprintf("%s: the filter matched %d devices that are not Windows devices Intune manages and that can run remediations; they were left out (Intune ignores filters it cannot apply)", t.Field, pk.excludedFilter))
	}
	if pk.unmanaged > 0 {
		pk.x.warn(fmt.Sprintf("%s: %d group members are not Windows devices managed by Intune; left out", t.Field, pk.unmanaged))
	}
	var after time.Time
	if t.LastSyncWithin > 0 {
		after = now.Add(-t.LastSyncWithin)
	}
	ids := make([]string, 0, len(pk.picked))
	for id := range pk.picked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		d := pk.picked[id]
		pk.items = append(pk.items, Item{Collection: intune.ManagedDevices, DeviceID: d.ID, ScriptPolicyID: t.ScriptPolicyID,
			Field: t.Field, Device: &d, SyncedAfter: after})
	}
}

// overCap reports whether the selectors have found more devices (n) than
// the run may trigger: resolving stops at the first device past the cap,
// so a filter or a group that spans the tenant holds no more than the cap
// in memory, nor costs more reads. A dry run counts past
// MAX_DEVICES_PER_RUN, to report the number, but never past its caller's
// max_devices: a caller limited to a few devices cannot list the fleet.
func (x *execution) overCap(n int) bool {
	limit, _ := x.deviceCap()
	if limit <= 0 || n <= limit || (x.plan.DryRun && !x.callerCap()) {
		return false
	}
	x.tooMany, x.reached = true, n
	return true
}

// callerCap reports whether the run's cap is its caller's (CALLER_POLICY).
func (x *execution) callerCap() bool {
	limit, name := x.deviceCap()
	return limit > 0 && name == x.plan.CapName && x.plan.CapName != ""
}

// capProblem is the problem of selectors that went past the run's cap.
func (x *execution) capProblem(field string) fault.FieldError {
	limit, name := x.deviceCap()
	return fault.FieldError{Field: field, Message: fmt.Sprintf("selects more than %s (%d) devices; resolving stopped at the %d-th: narrow the targets, split the run, or send a dry run to count them", name, limit, x.reached)}
}

// mergeItems adds resolved items to the explicit ones: a device already
// present with the same script is kept once (with a warning); with another
// script, the first entry wins and the conflict is a warning too, since
// Intune runs one on-demand remediation per device at a time.
func mergeItems(explicit, resolved []Item, warnings *[]string) []Item {
	seen := map[string]Item{}
	for _, it := range explicit {
		seen[strings.ToLower(it.DeviceID)] = it
	}
	out := explicit
	for _, it := range resolved {
		key := strings.ToLower(it.DeviceID)
		prev, dup := seen[key]
		switch {
		case !dup:
			seen[key] = it
			out = append(out, it)
		case !strings.EqualFold(prev.ScriptPolicyID, it.ScriptPolicyID):
			*warnings = append(*warnings, fmt.Sprintf("device %s is selected by %s with script %s and by %s with script %s: only the first runs (one on-demand remediation per device at a time)",
				it.DeviceID, prev.Field, prev.ScriptPolicyID, it.Field, it.ScriptPolicyID))
		}
	}
	return out
}

// windowsIndex is the tenant's Windows devices by name and Entra device id.
type windowsIndex struct {
	byName    map[string][]intune.Device
	byEntraID map[string]intune.Device
}

func (x *execution) readWindows() (*windowsIndex, error) {
	idx := &windowsIndex{byName: map[string][]intune.Device{}, byEntraID: map[string]intune.Device{}}
	err := eachPage(x, x.devicePages(windowsFilter, false), func(devs []intune.Device) bool {
		for _, d := range devs {
			if !isWindows(&d) {
				continue // the filter is honoured, but never trusted
			}
			idx.byName[strings.ToLower(d.DeviceName)] = append(idx.byName[strings.ToLower(d.DeviceName)], d)
			if d.AzureADDeviceID != "" {
				idx.byEntraID[strings.ToLower(d.AzureADDeviceID)] = d
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return idx, nil
}

// byName finds the devices named name: one filter query per name for a
// few names, else the Windows device index. Names are compared again here,
// exactly and case-insensitively, in case Intune ignored the filter.
func (x *execution) byName(name string, names int, windows func() (*windowsIndex, error)) ([]intune.Device, error) {
	if names > nameQueryLimit {
		idx, err := windows()
		if err != nil {
			return nil, err
		}
		return idx.byName[strings.ToLower(name)], nil
	}
	var out []intune.Device
	err := x.eachDevice("deviceName eq '"+strings.ReplaceAll(name, "'", "''")+"'", func(devs []intune.Device) bool {
		for _, d := range devs {
			if strings.EqualFold(d.DeviceName, name) {
				out = append(out, d)
			}
		}
		return true
	})
	return out, err
}

// eachDevice pages through the device list under a caller's filter or name
// query, handing each
// page to fn and keeping none of it (a 100,000-device tenant never sits in
// memory whole) until fn returns false.
func (x *execution) eachDevice(filter string, fn func([]intune.Device) bool) error {
	return eachPage(x, x.devicePages(filter, true), fn)
}

// eachGroupPage pages through a group's device members, handing each page
// to fn until it returns false. Members count against MaxListed, as the
// device list's pages do.
func (x *execution) eachGroupPage(id string, fn func([]intune.GroupMember) bool) error {
	return eachPage(x, func(ctx context.Context, next string) ([]intune.GroupMember, string, error) {
		p, err := x.engine.graph.GroupDevices(ctx, id, next)
		if n := x.listed.Add(int64(len(p.Members))); n > int64(x.engine.cfg.MaxListed) {
			return nil, "", fmt.Errorf("%w: more than %d devices read from the tenant's list and groups (MAX_LISTED_DEVICES)", errTooManyListed, x.engine.cfg.MaxListed)
		}
		return p.Members, p.NextLink, err
	}, fn)
}

func (x *execution) warn(msg string) {
	x.warnMu.Lock()
	defer x.warnMu.Unlock()
	x.warnings = append(x.warnings, msg)
}
