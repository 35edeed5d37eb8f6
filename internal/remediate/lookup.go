package remediate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
)

// pageSize is the device-list page remediator asks for (Intune's maximum).
const pageSize = 1000

// listThreshold is the smallest request for which reading the tenant's
// device list is considered instead of $batch lookups.
const listThreshold = 100

// validationFailure is a run rejected because devices failed validation.
type validationFailure struct{ Error ErrorInfo }

// validate looks every pending device up and skips the ineligible ones. It
// returns the rejection when devices failed validation and
// ignore_partial_failures is off (a dry run only warns).
func (x *execution) validate(s *Summary) *validationFailure {
	ids := make([]string, 0, len(x.plan.Items))
	for _, it := range x.plan.Items {
		if it.Device == nil && x.plan.ValidateDevices {
			ids = append(ids, it.DeviceID) // unique: the plan is de-duplicated
		}
	}
	found, errs := x.lookup(ids)
	for _, it := range x.plan.Items {
		if it.Device != nil {
			found[strings.ToLower(it.DeviceID)] = it.Device
		}
	}
	var problems []fault.FieldError
	for i, it := range x.plan.Items {
		res := &s.Devices[i]
		key := strings.ToLower(it.DeviceID)
		d, ok := found[key]
		ge := errs[key]
		switch {
		case !ok && ge == nil && !x.plan.ValidateDevices:
			continue // not validated: the trigger's answer will tell
		case ok:
			res.DeviceName = d.DeviceName
			reason, msg := eligibility(d, it.Collection, it.SyncedAfter)
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
			x.notAttempted(res)
		}
		// Explicitly listed devices follow ignore_partial_failures; devices
		// a selector found are a set, and an ineligible one is only skipped.
		if res.Outcome != NotAttempted && it.Device == nil {
			problems = append(problems, fault.FieldError{Field: it.Field + ".device_id", Message: res.Message})
		}
	}
	if len(problems) == 0 || x.plan.IgnorePartialFailures {
		return nil
	}
	if x.plan.DryRun {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%d devices failed validation: without ignore_partial_failures a real run would be rejected and trigger nothing", len(problems)))
		return nil
	}
	return &validationFailure{Error: ErrorInfo{
		Code:    fault.DeviceValidationFailed,
		Message: fmt.Sprintf("%d devices failed validation; nothing was triggered (set ignore_partial_failures to skip them and run the rest)", len(problems)),
		Details: problems,
	}}
}

// lookup reads the devices by id. It reads the tenant's device list when
// that takes fewer calls than $batch lookups of 20, else batches. A device
// absent from the answers is absent from both maps (not looked up in time).
func (x *execution) lookup(ids []string) (map[string]*intune.Device, map[string]*intune.Error) {
	found := map[string]*intune.Device{}
	errs := map[string]*intune.Error{}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[strings.ToLower(id)] = true
	}
	remaining := ids
	if len(ids) >= listThreshold {
		remaining = x.listLookup(ids, want, found, errs)
	}
	x.batchLookup(remaining, found, errs)
	return found, errs
}

// listLookup reads the whole device list when that takes fewer calls than
// batching: a one-device probe learns the list's size (@odata.count), then
// pages of 1,000 follow. It returns the ids still to look up.
func (x *execution) listLookup(ids []string, want map[string]bool, found map[string]*intune.Device, errs map[string]*intune.Error) []string {
	batches := (len(ids) + intune.MaxBatch - 1) / intune.MaxBatch
	count, err := x.fleetSize("")
	if err != nil || count < 0 || (count+pageSize-1)/pageSize >= batches {
		return ids // batching is cheaper, or the size is unknown
	}
	err = eachPage(x, x.devicePages("", false), func(devs []intune.Device) bool {
		for i := range devs {
			if key := strings.ToLower(devs[i].ID); want[key] {
				found[key] = &devs[i]
			}
		}
		return true
	})
	var rest []string
	for _, id := range ids {
		key := strings.ToLower(id)
		switch {
		case found[key] != nil:
		case err == nil:
			errs[key] = &intune.Error{Status: 404, Code: "ResourceNotFound", Message: "not in the tenant's device list"}
		default:
			rest = append(rest, id)
		}
	}
	return rest
}

// devicePages is the fetch of eachPage over the device list under filter;
// capped pages are small for a caller held to a few devices.
// It fails with errTooManyListed once the execution has read more than
// MaxListed devices.
func (x *execution) devicePages(filter string, capped bool) func(ctx context.Context, next string) ([]intune.Device, string, error) {
	return func(ctx context.Context, next string) ([]intune.Device, string, error) {
		size := pageSize
		if limit, _ := x.deviceCap(); capped && x.callerCap() {
			// A caller held to a few devices reads a few: pages of at
			// most its cap and one (at least 100), so that a filter over
			// the fleet stops within a page of the cap.
			size = min(pageSize, max(limit+1, 100))
		}
		p, err := x.engine.graph.ListDevices(ctx, filter, size, next)
		if n := x.listed.Add(int64(len(p.Devices))); n > int64(x.engine.cfg.MaxListed) {
			return nil, "", fmt.Errorf("%w: more than %d devices read from the tenant's list (MAX_LISTED_DEVICES)", errTooManyListed, x.engine.cfg.MaxListed)
		}
		return p.Devices, p.NextLink, err
	}
}

// errTooManyListed stops a run that has read MaxListed devices.
var errTooManyListed = errors.New("too many devices listed")

// fleetSize reads the size of the device list under filter (@odata.count,
// -1 when Graph does not say) with a one-device page.
func (x *execution) fleetSize(filter string) (int, error) {
	count := -1
	err := x.read(func(ctx context.Context) error {
		p, err := x.engine.graph.ListDevices(ctx, filter, 1, "")
		count = p.Count
		return err
	})
	return count, err
}

// batchLookup reads ids in $batch requests of 20. Each batch is one call
// of the one retry loop (call): items answered or failed for good leave
// it, and while some were throttled or failed transiently the batch is
// sent again with those alone, after the wait the most pressing of their
// errors asks for (a 429's Retry-After first). Items the loop gives up on
// keep their last error; those it had no time for are left out.
func (x *execution) batchLookup(ids []string, found map[string]*intune.Device, errs map[string]*intune.Error) {
	e := x.engine
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(e.cfg.Concurrency)
	for start := 0; start < len(ids); start += intune.MaxBatch {
		if x.runCtx.Err() != nil {
			break
		}
		pending := ids[start:min(start+intune.MaxBatch, len(ids))]
		g.Go(func() error {
			last := map[string]*intune.Error{}
			_, _, err := x.callN(read, func() int { return len(pending) }, func(ctx context.Context) error {
				res, err := e.graph.Devices(ctx, pending)
				if err != nil {
					return err // the whole batch: every item is sent again, or keeps this error
				}
				var retry []string
				var worst *intune.Error
				mu.Lock()
				defer mu.Unlock()
				for _, l := range res {
					key := strings.ToLower(l.ID)
					switch {
					case l.Device != nil:
						found[key] = l.Device
					case e.cfg.Retry.CheckRetry(read, l.Err) == final:
						errs[key] = l.Err
					default:
						retry, last[key] = append(retry, l.ID), l.Err
						worst = morePressing(worst, l.Err)
					}
				}
				pending = retry
				if worst != nil {
					return worst
				}
				return nil
			})
			if err == nil || errors.Is(err, errNoTime) {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range pending {
				key := strings.ToLower(id)
				errs[key] = cmp.Or(last[key], asGraphError(err))
			}
			return nil
		})
	}
	_ = g.Wait()
}

// morePressing is the error whose retry says the most: a 429 (its
// Retry-After closes the gate for every call) over a transient failure.
func morePressing(a, b *intune.Error) *intune.Error {
	if a == nil || b.Throttled() && !a.Throttled() {
		return b
	}
	return a
}
