package azstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/runs"
)

// The shared Graph budget (pace.Shared) lives in the run table: one row a
// budget (partition budget|<app>|<tenant>|<kind>) holding the first
// position of its timeline no process has taken, the budget's spacing, the
// processes that claimed lately, and its 429 state. A claim reads the row
// and writes it back with the row's ETag, so two processes never take the
// same position; the table never grows by more than a row a budget.
// Times are the store's own (the Date header of its answers), never a
// process's clock.
const (
	budgetPrefix = "budget|"
	budgetRow    = "next"
	// claimAttempts bounds the read-and-write rounds of one claim while
	// other processes keep winning the row; it then takes nothing, and the
	// caller waits and asks again.
	claimAttempts = 16
	// processWindow is how long a process counts as using a budget after
	// its last claim; maxProcesses bounds the row's list of them.
	processWindow = time.Minute
	maxProcesses  = 200
	// slack is how far past its horizon the budget's next position may be
	// before it is taken to have been pushed by a clock that runs ahead.
	slack = 2
)

type budgetNext struct {
	Next int64 `json:"n"`
	// Spacing is the budget's time between positions, in nanoseconds.
	Spacing int64 `json:"s,omitempty"`
	// Processes are the processes that claimed lately: id → the store's
	// Unix time of their last claim.
	Processes map[string]int64 `json:"p,omitempty"`
	// PausedUntil is a 429 pause (Unix nanoseconds, store time);
	// ThrottledAt and Base the last 429 and the rate's share it left
	// (pace.Factor).
	PausedUntil int64   `json:"z,omitempty"`
	ThrottledAt int64   `json:"t,omitempty"`
	Base        float64 `json:"b,omitempty"`
}

var _ pace.Shared = (*Store)(nil)

// storeTime is the Date header of a captured answer (zero if none).
func storeTime(resp *http.Response) time.Time {
	if resp == nil {
		return time.Time{}
	}
	t, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return time.Time{}
	}
	return t
}

// readBudget reads a budget's row, its ETag and the store's time.
func (s *Store) readBudget(ctx context.Context, pk string) (budgetNext, string, time.Time, bool, error) {
	var row budgetNext
	var resp *http.Response
	etag, err := s.get(policy.WithCaptureResponse(ctx, &resp), pk, budgetRow, &row)
	missing := errors.Is(err, runs.ErrNotFound)
	if err != nil && !missing {
		return row, "", time.Time{}, false, err
	}
	return row, etag, storeTime(resp), missing, nil
}

// writeBudget writes row back if it is unchanged since etag (or adds it),
// returning the store's time; conflict reports a lost race.
func (s *Store) writeBudget(ctx context.Context, pk, etag string, missing bool, row budgetNext) (when time.Time, conflict bool, err error) {
	e, err := entity(pk, budgetRow, row)
	if err != nil {
		return time.Time{}, false, err
	}
	var resp *http.Response
	cctx := policy.WithCaptureResponse(ctx, &resp)
	s.ops.Add(1)
	code := http.StatusPreconditionFailed
	if missing {
		code = http.StatusConflict
		_, err = s.table.AddEntity(cctx, e, nil)
	} else {
		tag := azcore.ETag(etag)
		_, err = s.table.UpdateEntity(cctx, e, &aztables.UpdateEntityOptions{IfMatch: &tag, UpdateMode: aztables.UpdateModeReplace})
	}
	if err != nil {
		return time.Time{}, hasCode(err, code), err
	}
	return storeTime(resp), false, nil
}

// Claim implements pace.Shared: two storage operations (a read and a
// conditional write) when no other process writes the row at the same
// moment.
func (s *Store) Claim(ctx context.Context, req pace.ClaimRequest) (pace.Claimed, error) {
	if err := s.check(); err != nil {
		return pace.Claimed{}, err
	}
	pk := budgetPrefix + req.Key
	if !validKey(pk) {
		return pace.Claimed{}, fmt.Errorf("azstore: %q is not a usable budget key", req.Key)
	}
	lost := 0
	contended := func(err error) error {
		if lost > 0 && ctx.Err() != nil {
			// Out of time while others kept winning the row: busy, not down.
			return fmt.Errorf("%w (%d lost races): %w", pace.ErrContended, lost, err)
		}
		return err
	}
	for range claimAttempts {
		row, etag, now, missing, err := s.readBudget(ctx, pk)
		if err != nil {
			return pace.Claimed{}, contended(err)
		}
		spacing := int64(req.Spacing)
		if row.Spacing != 0 && spacing != 0 && row.Spacing != spacing {
			return pace.Claimed{}, fmt.Errorf("%w: this budget paces at %.3g/s, this process at %.3g/s", pace.ErrRateMismatch,
				float64(time.Second)/float64(row.Spacing), float64(time.Second)/float64(spacing))
		}
		out := pace.Claimed{StoreTime: now, Factor: pace.Factor(row.Base, time.Unix(0, row.ThrottledAt), now)}
		if row.ThrottledAt == 0 {
			out.Factor = 1
		}
		if row.PausedUntil > 0 && !now.IsZero() && now.Before(time.Unix(0, row.PausedUntil)) {
			out.PausedUntil = time.Unix(0, row.PausedUntil)
		}
		from := req.From
		first := max(row.Next, from)
		if !now.IsZero() && spacing > 0 {
			// The store's clock, not the claimer's, decides what is
			// plausible. A claimer asking from well past the store's now
			// has a clock that runs ahead: it is served from the store's
			// now. A next position far beyond the store's now plus the
			// horizon was pushed by such a clock: it is reset.
			storeNow := now.UnixNano() / spacing
			from = min(from, storeNow+max(req.Horizon/2, 1))
			first = max(row.Next, from)
			if row.Next > storeNow+slack*max(req.Horizon, 1) {
				first, out.Repaired = from, true
			}
		}
		if req.Want <= 0 || first > from+req.Horizon {
			return out, nil
		}
		row.Next, row.Spacing = first+int64(req.Want), max(row.Spacing, spacing)
		row.Processes = recent(row.Processes, req.Process, now)
		out.Processes = len(row.Processes)
		when, conflict, err := s.writeBudget(ctx, pk, etag, missing, row)
		if conflict {
			lost++
			continue
		}
		if err != nil {
			return pace.Claimed{}, contended(err)
		}
		if !when.IsZero() {
			out.StoreTime = when
		}
		out.First, out.Got = first, req.Want
		return out, nil
	}
	return pace.Claimed{}, nil
}

// recent is the processes that claimed within processWindow of now, with
// process (if named) as of now; at most maxProcesses, the latest kept.
func recent(procs map[string]int64, process string, now time.Time) map[string]int64 {
	if now.IsZero() {
		now = time.Now()
	}
	out := map[string]int64{}
	for id, at := range procs {
		if now.Sub(time.Unix(at, 0)) <= processWindow {
			out[id] = at
		}
	}
	if process != "" {
		out[process] = now.Unix()
	}
	for len(out) > maxProcesses {
		oldest, at := "", int64(0)
		for id, t := range out {
			if oldest == "" || t < at {
				oldest, at = id, t
			}
		}
		delete(out, oldest)
	}
	return out
}

// Throttled implements pace.Shared: the pause is written to the budget's
// row (kept if a longer one is there), and the budget's share of its rate
// halves (at least 5%), to come back at pace.RecoveryPerSecond.
func (s *Store) Throttled(ctx context.Context, key string, until time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	pk := budgetPrefix + key
	if !validKey(pk) {
		return fmt.Errorf("azstore: %q is not a usable budget key", key)
	}
	for range claimAttempts {
		row, etag, now, missing, err := s.readBudget(ctx, pk)
		if err != nil {
			return err
		}
		if now.IsZero() {
			now = time.Now()
		}
		row.PausedUntil = max(row.PausedUntil, until.UnixNano())
		f := 1.0
		if row.ThrottledAt != 0 {
			f = pace.Factor(row.Base, time.Unix(0, row.ThrottledAt), now)
		}
		row.Base, row.ThrottledAt = max(f/2, 0.05), now.UnixNano()
		_, conflict, err := s.writeBudget(ctx, pk, etag, missing, row)
		if !conflict {
			return err
		}
	}
	return errors.New("azstore: the budget's row stayed contended")
}
