package azstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/runs"
)

// The shared Graph budget (pace.Shared) lives in the run table: one
// partition a budget (budget|<app>|<tenant>|<kind>) holding a lease row a
// process (lease|<process>: its rate, share, demand, term) and a pause row
// (the budget's 429 state). A process writes only its own lease row
// (unconditionally: nobody else writes it, so nothing races) and reads the
// partition; the table stamps each row with its own clock (Timestamp) and
// answers with its own time (Date), and those are the times every lease is
// judged by. Lease rows unwritten for staleLease are deleted by the
// processes that read them, a few at a time.
const (
	budgetPrefix = "budget|"
	leasePrefix  = "lease|"
	pauseRow     = "pause"
	// formerRow is the row of the position timeline this design replaced:
	// deleted where found.
	formerRow = "next"
	// claimAttempts bounds the read-and-write rounds of a 429 record while
	// other processes keep winning the pause row.
	claimAttempts = 16
	// staleLease is how long a lease row stays after its last write;
	// staleDeletes how many a renewal deletes at most.
	staleLease   = time.Hour
	staleDeletes = 2
)

// budgetPause is a budget's 429 state.
type budgetPause struct {
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

// budgetKey is the partition of budget key.
func budgetKey(key string) (string, error) {
	pk := budgetPrefix + key
	if !validKey(pk) {
		return "", fmt.Errorf("azstore: %q is not a usable budget key", key)
	}
	return pk, nil
}

// writeLease upserts mine as its process's lease row (one operation).
func (s *Store) writeLease(ctx context.Context, key string, mine pace.Lease) (string, error) {
	if err := s.check(); err != nil {
		return "", err
	}
	pk, err := budgetKey(key)
	if err != nil {
		return "", err
	}
	rk := leasePrefix + mine.Process
	if !validKey(rk) {
		return "", fmt.Errorf("azstore: %q is not a usable process name", mine.Process)
	}
	e, err := entity(pk, rk, mine)
	if err != nil {
		return "", err
	}
	s.ops.Add(1)
	_, err = s.table.UpsertEntity(ctx, e, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
	return pk, err
}

// Renew implements pace.Shared: an upsert of this process's row and a
// query of the budget's partition, two storage operations.
func (s *Store) Renew(ctx context.Context, key string, mine pace.Lease) (pace.Leases, error) {
	pk, err := s.writeLease(ctx, key, mine)
	if err != nil {
		return pace.Leases{}, err
	}
	out := pace.Leases{Factor: 1}
	var stale []string
	filter := fmt.Sprintf("PartitionKey eq '%s'", pk)
	pager := s.table.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	for pager.More() {
		var resp *http.Response
		s.ops.Add(1)
		page, err := pager.NextPage(policy.WithCaptureResponse(ctx, &resp))
		if err != nil {
			return pace.Leases{}, err
		}
		if out.Now.IsZero() {
			out.Now = storeTime(resp)
		}
		for _, raw := range page.Entities {
			var e aztables.EDMEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return pace.Leases{}, err
			}
			written := time.Time(e.Timestamp)
			switch {
			case e.RowKey == pauseRow:
				var p budgetPause
				if _, err := value(raw, &p); err != nil {
					return pace.Leases{}, err
				}
				if p.PausedUntil > 0 {
					out.PausedUntil = time.Unix(0, p.PausedUntil)
				}
				out.Factor = pace.Factor(p.Base, time.Unix(0, p.ThrottledAt), out.Now)
			case e.RowKey == formerRow:
				stale = append(stale, e.RowKey)
			case strings.HasPrefix(e.RowKey, leasePrefix):
				if !out.Now.IsZero() && out.Now.Sub(written) > staleLease {
					stale = append(stale, e.RowKey)
					continue
				}
				var l pace.Lease
				if _, err := value(raw, &l); err != nil {
					return pace.Leases{}, err
				}
				l.Process, l.Written = strings.TrimPrefix(e.RowKey, leasePrefix), written
				out.All = append(out.All, l)
			}
		}
	}
	if out.Now.IsZero() {
		return pace.Leases{}, errors.New("azstore: the table's answer has no Date: leases cannot be judged")
	}
	for _, rk := range stale[:min(len(stale), staleDeletes)] {
		s.ops.Add(1)
		_, _ = s.table.DeleteEntity(ctx, pk, rk, nil) // another reader may have deleted it
	}
	return out, nil
}

// Release implements pace.Shared: one upsert.
func (s *Store) Release(ctx context.Context, key string, mine pace.Lease) error {
	mine.Idle, mine.Share = true, 0
	_, err := s.writeLease(ctx, key, mine)
	return err
}

// Throttled implements pace.Shared: the pause (until the store's now plus
// d, and a second for the Date header's truncation) is written to the
// budget's pause row (a longer one there is kept), and the budget's share
// of its rate halves (at least 5%), to come back at
// pace.RecoveryPerSecond.
func (s *Store) Throttled(ctx context.Context, key string, d time.Duration) error {
	if err := s.check(); err != nil {
		return err
	}
	pk, err := budgetKey(key)
	if err != nil {
		return err
	}
	for range claimAttempts {
		var row budgetPause
		var resp *http.Response
		etag, err := s.get(policy.WithCaptureResponse(ctx, &resp), pk, pauseRow, &row)
		missing := errors.Is(err, runs.ErrNotFound)
		if err != nil && !missing {
			return err
		}
		now := storeTime(resp)
		if now.IsZero() {
			return errors.New("azstore: the table's answer has no Date: a pause cannot be placed on its clock")
		}
		row.PausedUntil = max(row.PausedUntil, now.Add(d+time.Second).UnixNano())
		f := pace.Factor(row.Base, time.Unix(0, row.ThrottledAt), now) // 1 before any 429 (no base)
		row.Base, row.ThrottledAt = max(f/2, 0.05), now.UnixNano()
		e, err := entity(pk, pauseRow, row)
		if err != nil {
			return err
		}
		s.ops.Add(1)
		code := http.StatusPreconditionFailed
		if missing {
			code = http.StatusConflict
			_, err = s.table.AddEntity(ctx, e, nil)
		} else {
			tag := azcore.ETag(etag)
			_, err = s.table.UpdateEntity(ctx, e, &aztables.UpdateEntityOptions{IfMatch: &tag, UpdateMode: aztables.UpdateModeReplace})
		}
		if !hasCode(err, code) {
			return err
		}
	}
	return errors.New("azstore: the budget's pause row stayed contended")
}
