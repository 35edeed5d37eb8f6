package remediate

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
)

// scriptIDs lists the plan's scripts once each, in order of appearance.
func (p Plan) scriptIDs() []string {
	var ids []string
	seen := map[string]bool{}
	add := func(id string) {
		if k := strings.ToLower(id); !seen[k] {
			seen[k] = true
			ids = append(ids, id)
		}
	}
	for _, it := range p.Items {
		add(it.ScriptPolicyID)
	}
	for _, t := range p.Targets {
		add(t.ScriptPolicyID)
	}
	return ids
}

// allowlist refuses scripts not on ALLOWED_SCRIPT_POLICY_IDS.
func (e *Engine) allowlist(p Plan) []fault.FieldError {
	if len(e.cfg.AllowedScripts) == 0 {
		return nil
	}
	var bad []fault.FieldError
	for _, id := range p.scriptIDs() {
		if !e.cfg.AllowedScripts[strings.ToLower(id)] {
			bad = append(bad, fault.FieldError{Field: "script_policy_id", Message: fmt.Sprintf("script %s is not allowed on this deployment", id)})
		}
	}
	return bad
}

// checkScripts reads each script once, when devices are validated or a
// pin must be checked: a missing script, one that is not a remediation
// script, or one edited after it was pinned rejects the run. A script that
// could not be read (throttled, Graph unavailable) is not called invalid:
// the run is refused as graph_unavailable, to be sent again.
func (x *execution) checkScripts(s *Summary) (code fault.Code, msg string, details []fault.FieldError) {
	code = fault.ScriptInvalid
	for _, id := range x.plan.scriptIDs() {
		pin, pinned := x.engine.cfg.ScriptPins[strings.ToLower(id)]
		if !x.plan.ValidateDevices && !pinned {
			continue
		}
		var sc intune.Script
		err := x.read(func(ctx context.Context) error {
			var err error
			sc, err = x.engine.graph.Script(ctx, id)
			return err
		})
		var ge *intune.Error
		if err != nil {
			ge = asGraphError(err)
		}
		switch {
		case err != nil && ge.Status == 404:
			details = append(details, fault.FieldError{Field: "script_policy_id", Message: fmt.Sprintf("no remediation script %s exists in Intune", id)})
			continue
		case err != nil && ge.Status == 403:
			details = append(details, fault.FieldError{Field: "script_policy_id", Message: "script " + id + " could not be read: " + ge.Message +
				" — the app needs the Graph application permission DeviceManagementScripts.Read.All"})
			continue
		case err != nil && ge.Status > 0 && ge.Status < 500 && !ge.Throttled():
			details = append(details, fault.FieldError{Field: "script_policy_id", Message: "script " + id + " could not be read: " + ge.Message})
			continue
		case err != nil:
			return fault.GraphUnavailable, "script " + id + " could not be read (" + ge.Message + "); nothing was triggered, send the request again",
				[]fault.FieldError{{Field: "script_policy_id", Message: "not readable now"}}
		case sc.Type != "" && sc.Type != "deviceHealthScript":
			details = append(details, fault.FieldError{Field: "script_policy_id", Message: fmt.Sprintf("script %s (%s) is a %s, not a remediation script (deviceHealthScript)", id, sc.DisplayName, sc.Type)})
			continue
		case pinned && !sc.LastModifiedDateTime.Equal(pin):
			return fault.ScriptChanged, fmt.Sprintf("script %s (%s) was modified at %s, after it was approved at %s (ALLOWED_SCRIPT_PINS); nothing was triggered",
				id, sc.DisplayName, sc.LastModifiedDateTime.UTC().Format(time.RFC3339), pin.UTC().Format(time.RFC3339)), []fault.FieldError{{Field: "script_policy_id", Message: "pinned script changed"}}
		}
		s.Scripts = append(s.Scripts, ScriptInfo{ID: sc.ID, DisplayName: sc.DisplayName, Version: sc.Version, LastModifiedDateTime: sc.LastModifiedDateTime})
	}
	if details != nil {
		return code, "a script the request names cannot be run; nothing was triggered", details
	}
	return "", "", nil
}

// checkCaps applies MAX_DEVICES_PER_RUN and MAX_FLEET_PERCENT to the
// resolved devices. A run over the fleet share needs confirm_device_count
// equal to the resolved count (the number a dry run reports).
func (x *execution) checkCaps(s *Summary) (code fault.Code, msg string) {
	cfg, n := x.engine.cfg, s.ResolvedDeviceCount
	if limit, name := x.deviceCap(); limit > 0 && n > limit {
		return fault.TooManyDevices,
			fmt.Sprintf("the request resolves to %d devices, more than %s (%d); narrow the targets or split the run", n, name, limit)
	}
	if cfg.MaxFleetPercent <= 0 || cfg.MaxFleetPercent >= 100 || n == 0 {
		return "", ""
	}
	if c := x.plan.ConfirmDeviceCount; c != nil && *c == n {
		return "", ""
	}
	fleet, err := x.fleetSize(windowsFilter)
	if err != nil || fleet <= 0 {
		return fault.FleetSizeUnknown, "the tenant's number of Windows devices could not be read to apply MAX_FLEET_PERCENT; nothing was triggered"
	}
	limit := int(math.Floor(float64(fleet) * cfg.MaxFleetPercent / 100))
	if n <= limit {
		return "", ""
	}
	return fault.ConfirmationRequired,
		fmt.Sprintf("the request resolves to %d devices, %.1f%% of the tenant's %d Windows devices, above MAX_FLEET_PERCENT (%g%%): to proceed, send \"confirm_device_count\": %d",
			n, 100*float64(n)/float64(fleet), fleet, cfg.MaxFleetPercent, n)
}

// Cooldown remembers when a device last had a script triggered, so runs
// close together do not overwrite each other on the device. It is asked
// once per script of a run, so a table-backed store answers with one query.
// Implementations must be safe for concurrent use.
type Cooldown interface {
	// Recent returns, by lower-case device id, the devices triggered with
	// script (lower-case) at or after since.
	Recent(ctx context.Context, scriptID string, since time.Time) (map[string]time.Time, error)
	// Triggered records that the devices were triggered with their scripts.
	Triggered(ctx context.Context, keys []CooldownKey, at time.Time) error
}

// CooldownKey is a device and a script, both lower-case.
type CooldownKey struct{ DeviceID, ScriptID string }

// applyCooldown skips devices triggered with the same script within the
// cooldown period. A store that cannot be read skips nothing and says so:
// the cooldown protects devices from overlapping runs, it does not gate
// remediation.
func (x *execution) applyCooldown(s *Summary) {
	cd, period := x.engine.cfg.Cooldown, x.engine.cfg.CooldownPeriod
	if cd == nil || period <= 0 {
		return
	}
	now := time.Now()
	recent := map[string]map[string]time.Time{}
	for i := range s.Devices {
		d := &s.Devices[i]
		if d.Outcome != Pending {
			continue
		}
		script := strings.ToLower(d.ScriptPolicyID)
		seen, ok := recent[script]
		if !ok {
			ctx, cancel := context.WithTimeout(x.callCtx, x.engine.cfg.StoreTimeout)
			var err error
			seen, err = cd.Recent(ctx, script, now.Add(-period))
			cancel()
			if err != nil {
				x.warn("the cooldown store could not be read (" + err.Error() + "); DEVICE_COOLDOWN was not applied")
			}
			recent[script] = seen
		}
		if last, ok := seen[strings.ToLower(d.DeviceID)]; ok && now.Sub(last) < period {
			d.Outcome, d.Reason = Skipped, ReasonCooldown
			d.Message = fmt.Sprintf("triggered with this script at %s, within DEVICE_COOLDOWN (%s); a new run would overwrite the one in progress",
				last.UTC().Format(time.RFC3339), period)
		}
	}
}

// markCooldown records the run's accepted triggers.
func (x *execution) markCooldown(s *Summary) {
	cd := x.engine.cfg.Cooldown
	if cd == nil || x.engine.cfg.CooldownPeriod <= 0 {
		return
	}
	var keys []CooldownKey
	for _, d := range s.Devices {
		if d.Outcome == Succeeded || d.Reason == ReasonOutcomeUnknown {
			keys = append(keys, CooldownKey{strings.ToLower(d.DeviceID), strings.ToLower(d.ScriptPolicyID)})
		}
	}
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(x.callCtx), x.engine.cfg.StoreTimeout)
	defer cancel()
	if err := cd.Triggered(ctx, keys, time.Now()); err != nil {
		x.warn("the cooldown store could not be written (" + err.Error() + "); these triggers will not hold off the next run")
	}
}

// MemoryCooldown is a process-local Cooldown; entries older than ttl are
// forgotten.
type MemoryCooldown struct {
	ttl  time.Duration
	mu   sync.Mutex
	last map[CooldownKey]time.Time
}

// NewMemoryCooldown returns a MemoryCooldown.
func NewMemoryCooldown(ttl time.Duration) *MemoryCooldown {
	return &MemoryCooldown{ttl: ttl, last: map[CooldownKey]time.Time{}}
}

// Recent implements Cooldown.
func (m *MemoryCooldown) Recent(_ context.Context, scriptID string, since time.Time) (map[string]time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]time.Time{}
	for k, t := range m.last {
		if k.ScriptID == scriptID && !t.Before(since) {
			out[k.DeviceID] = t
		}
	}
	return out, nil
}

// Triggered implements Cooldown.
func (m *MemoryCooldown) Triggered(_ context.Context, keys []CooldownKey, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.last) > 10000 {
		for k, t := range m.last {
			if at.Sub(t) > m.ttl {
				delete(m.last, k)
			}
		}
	}
	for _, k := range keys {
		m.last[k] = at
	}
	return nil
}

var _ Cooldown = (*MemoryCooldown)(nil)

// ScriptApproved re-checks, before a worker triggers a stored run's
// devices, that the run's script may still run: on ALLOWED_SCRIPT_POLICY_IDS
// as configured now and, when pinned in ALLOWED_SCRIPT_PINS, not modified
// since (one read of the script). The answer is a code (fault.ScriptNotAllowed,
// fault.ScriptChanged) and message, "" when it may run; err is a read that
// failed, to be retried.
func (e *Engine) ScriptApproved(ctx context.Context, tenant, id string) (code fault.Code, msg string, err error) {
	if len(e.cfg.AllowedScripts) > 0 && !e.cfg.AllowedScripts[strings.ToLower(id)] {
		return fault.ScriptNotAllowed, fmt.Sprintf("script %s is no longer on this deployment's allowlist (ALLOWED_SCRIPT_POLICY_IDS)", id), nil
	}
	pin, pinned := e.cfg.ScriptPins[strings.ToLower(id)]
	if !pinned {
		return "", "", nil
	}
	x := e.newExecution(ctx, time.Now(), 0, tenant)
	defer x.cancel()
	var sc intune.Script
	if err := x.read(func(ctx context.Context) error {
		var err error
		sc, err = e.graph.Script(ctx, id)
		return err
	}); err != nil {
		return "", "", err
	}
	if !sc.LastModifiedDateTime.Equal(pin) {
		return fault.ScriptChanged, fmt.Sprintf("script %s was modified at %s, after it was approved at %s (ALLOWED_SCRIPT_PINS)",
			id, sc.LastModifiedDateTime.UTC().Format(time.RFC3339), pin.UTC().Format(time.RFC3339)), nil
	}
	return "", "", nil
}
