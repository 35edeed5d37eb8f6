package remediate

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/remediator/remediator/internal/graph"
	"github.com/remediator/remediator/internal/pace"
)

// pageSize is the device-list page remediator asks for (Intune's maximum).
const pageSize = 1000

// listThreshold is the smallest request for which reading the tenant's
// device list is considered instead of $batch lookups.
const listThreshold = 100

// validate looks every device up, skips the ineligible ones and reports
// whether the run is rejected (a problem and ignore_partial_failures off).
func (r *run) validate(s *Summary, eligible []bool) (rejected bool) {
	ids := make([]string, 0, len(r.plan.Items))
	for _, it := range r.plan.Items {
		if it.Device == nil && r.plan.ValidateDevices {
			ids = append(ids, it.DeviceID) // unique: the plan is de-duplicated
		}
	}
	found, errs := r.lookup(ids)
	for _, it := range r.plan.Items {
		if it.Device != nil {
			found[strings.ToLower(it.DeviceID)] = it.Device
		}
	}
	var problems []FieldError
	for i, it := range r.plan.Items {
		res := &s.Devices[i]
		key := strings.ToLower(it.DeviceID)
		d, ok := found[key]
		ge := errs[key]
		switch {
		case !ok && ge == nil && !r.plan.ValidateDevices:
			continue // not validated: the trigger's answer will tell
		case ok:
			res.DeviceName = d.DeviceName
			reason, msg := eligibility(it, d)
			if reason == "" {
				continue
			}
			res.Outcome, res.Reason, res.Message = Skipped, reason, msg
		case ge != nil && ge.Status == 404:
			res.Outcome, res.Reason = Skipped, ReasonNotFound
			res.Message = "no managed device with this id in Intune"
			res.HTTPStatus, res.ErrorCode, res.RequestID = 404, ge.Code, ge.RequestID
		case ge != nil:
			res.Outcome, res.Reason = Failed, ReasonLookupFailed
			res.Message = "the device could not be looked up: " + ge.Message
			if ge.Status == 403 {
				res.Message += " — " + lookupPermissionHint
			}
			res.HTTPStatus, res.ErrorCode, res.RequestID = ge.Status, ge.Code, ge.RequestID
		default: // not looked up before the deadline
			res.Reason = r.stopReason()
		}
		eligible[i] = false
		// Explicitly listed devices follow ignore_partial_failures; devices
		// a selector found are a set, and an ineligible one is only skipped.
		if res.Outcome != NotAttempted && it.Device == nil {
			problems = append(problems, FieldError{Field: it.Field + ".device_id", Message: res.Message})
		}
	}
	if len(problems) == 0 || r.plan.IgnorePartialFailures {
		return false
	}
	if r.plan.DryRun {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%d devices failed validation: without ignore_partial_failures a real run would be rejected and trigger nothing", len(problems)))
		return false
	}
	for i := range s.Devices {
		if eligible[i] {
			s.Devices[i].Outcome, s.Devices[i].Reason = NotAttempted, ReasonRunRejected
			eligible[i] = false
		}
	}
	s.Error = &ErrorInfo{
		Code:    "device_validation_failed",
		Message: fmt.Sprintf("%d devices failed validation; nothing was triggered (set ignore_partial_failures to skip them and run the rest)", len(problems)),
		Details: problems,
	}
	return true
}

// eligibility says why a device cannot run an on-demand remediation, or
// "" if it can.
func eligibility(it Item, d *graph.Device) (reason, message string) {
	switch {
	case !strings.Contains(strings.ToLower(d.OperatingSystem), "windows"):
		return ReasonNotWindows, fmt.Sprintf("operatingSystem is %q; remediations run on Windows only", d.OperatingSystem)
	case it.Collection == graph.CoManagedDevices && !strings.HasPrefix(d.ManagementAgent, "configurationManagerClient"):
		return ReasonNotCoManaged, fmt.Sprintf("managementAgent is %q, not co-managed; list it under managed_devices", d.ManagementAgent)
	case d.JoinType == "azureADRegistered":
		return ReasonEntraRegistered, "the device is only Entra registered; remediations need Entra joined or hybrid joined devices"
	case !it.SyncedAfter.IsZero() && d.LastSyncDateTime.Before(it.SyncedAfter):
		return ReasonStale, fmt.Sprintf("last synced %s, longer ago than last_sync_within; it would not receive the trigger", d.LastSyncDateTime.UTC().Format(time.RFC3339))
	}
	return "", ""
}

// lookup reads the devices by id. It reads the tenant's device list when
// that takes fewer calls than $batch lookups of 20, else batches. A device
// absent from the answers is absent from both maps (not looked up in time).
func (r *run) lookup(ids []string) (map[string]*graph.Device, map[string]*graph.Error) {
	found := map[string]*graph.Device{}
	errs := map[string]*graph.Error{}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[strings.ToLower(id)] = true
	}
	remaining := ids
	if len(ids) >= listThreshold {
		remaining = r.listLookup(ids, want, found, errs)
	}
	r.batchLookup(remaining, found, errs)
	return found, errs
}

// listLookup reads the whole device list when that takes fewer calls than
// batching: a one-device probe learns the list's size (@odata.count), then
// pages of 1,000 follow. It returns the ids still to look up.
func (r *run) listLookup(ids []string, want map[string]bool, found map[string]*graph.Device, errs map[string]*graph.Error) []string {
	batches := (len(ids) + graph.MaxBatch - 1) / graph.MaxBatch
	probe, ok := r.readPage("", 1)
	if !ok || probe.Count < 0 || (probe.Count+pageSize-1)/pageSize >= batches {
		return ids // batching is cheaper, or the size is unknown
	}
	next, complete := "", false
	for {
		p, ok := r.readPage(next, pageSize)
		if !ok {
			break
		}
		for i := range p.Devices {
			if key := strings.ToLower(p.Devices[i].ID); want[key] {
				found[key] = &p.Devices[i]
			}
		}
		if p.NextLink == "" {
			complete = true
			break
		}
		next = p.NextLink
	}
	var rest []string
	for _, id := range ids {
		key := strings.ToLower(id)
		switch {
		case found[key] != nil:
		case complete:
			errs[key] = &graph.Error{Status: 404, Code: "ResourceNotFound", Message: "not in the tenant's device list"}
		default:
			rest = append(rest, id)
		}
	}
	return rest
}

// readPage reads one device-list page of at most top devices; false when
// it gave up.
func (r *run) readPage(next string, top int) (graph.Page, bool) {
	var p graph.Page
	err := r.read(func() error {
		var err error
		p, err = r.engine.graph.ListDevices(r.callCtx, "", top, next)
		return err
	})
	return p, err == nil
}

// batchLookup reads ids in $batch requests of 20, in rounds: items that
// were throttled or hit a transient error go into the next round.
func (r *run) batchLookup(ids []string, found map[string]*graph.Device, errs map[string]*graph.Error) {
	e := r.engine
	var mu sync.Mutex
	tries := map[string]int{}
	pending := ids
	for round := 1; len(pending) > 0 && round <= maxThrottledRetries; round++ {
		var retry []string
		var g errgroup.Group
		g.SetLimit(e.cfg.Concurrency)
		for start := 0; start < len(pending); start += graph.MaxBatch {
			chunk := pending[start:min(start+graph.MaxBatch, len(pending))]
			if r.runCtx.Err() != nil {
				break
			}
			g.Go(func() error {
				if _, err := e.pacer.Read(r.runCtx, len(chunk)); err != nil {
					return nil
				}
				res, err := e.graph.Devices(r.callCtx, chunk)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					ge := asGraphError(err)
					if ge.Throttled() {
						r.onThrottled(ge, round)
					}
					for _, id := range chunk {
						retry = r.retryOrFail(id, ge, tries, retry, errs)
					}
					return nil
				}
				for _, l := range res {
					key := strings.ToLower(l.ID)
					switch {
					case l.Device != nil:
						found[key] = l.Device
					case l.Err.Throttled():
						r.onThrottled(l.Err, round)
						retry = append(retry, l.ID)
					default:
						retry = r.retryOrFail(l.ID, l.Err, tries, retry, errs)
					}
				}
				return nil
			})
		}
		_ = g.Wait()
		if len(retry) > 0 && r.runCtx.Err() == nil {
			// Transient errors back off; 429s already closed the gate.
			_ = pace.Sleep(r.runCtx, min(pace.Backoff(round, e.cfg.BackoffBase, e.cfg.BackoffMax), time.Until(deadlineOr(r))))
		}
		pending = retry
	}
}

// retryOrFail queues id for another round when its error is transient and
// it has tries left, else records the error.
func (r *run) retryOrFail(id string, ge *graph.Error, tries map[string]int, retry []string, errs map[string]*graph.Error) []string {
	key := strings.ToLower(id)
	transient := ge.Throttled() || ge.Status >= 500 || ge.Transport
	if transient && (ge.Throttled() || tries[key] < r.engine.cfg.UnavailableRetries) {
		tries[key]++
		return append(retry, id)
	}
	errs[key] = ge
	return retry
}

func deadlineOr(r *run) time.Time {
	if d, ok := r.runCtx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Hour)
}
