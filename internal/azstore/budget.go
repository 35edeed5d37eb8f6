package azstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/runs"
)

// The shared Graph budget (pace.Shared) lives in the run table: one row a
// budget (partition budget|<app>|<tenant>|<kind>) holding the first
// position of its timeline no process has taken. A claim reads the row and
// writes it back with the row's ETag, so two processes never take the same
// position; the table never grows by more than a row a budget.
const (
	budgetPrefix = "budget|"
	budgetRow    = "next"
	// claimAttempts bounds the read-and-write rounds of one claim while
	// other processes keep winning the row; it then takes nothing, and the
	// caller waits and asks again.
	claimAttempts = 16
)

type budgetNext struct {
	Next int64 `json:"n"`
}

var _ pace.Shared = (*Store)(nil)

// Claim implements pace.Shared: two storage operations (a read and a
// conditional write) when no other process writes the row at the same
// moment.
func (s *Store) Claim(ctx context.Context, key string, from int64, want int, horizon int64) (int64, int, error) {
	if err := s.check(); err != nil {
		return 0, 0, err
	}
	pk := budgetPrefix + key
	if !validKey(pk) {
		return 0, 0, fmt.Errorf("azstore: %q is not a usable budget key", key)
	}
	lost := 0
	contended := func(err error) error {
		if lost > 0 && ctx.Err() != nil {
			// Out of time while others kept winning the row: busy, not down.
			return fmt.Errorf("%w (%d lost races): %v", pace.ErrContended, lost, err)
		}
		return err
	}
	for range claimAttempts {
		var row budgetNext
		etag, err := s.get(ctx, pk, budgetRow, &row)
		missing := errors.Is(err, runs.ErrNotFound)
		if err != nil && !missing {
			return 0, 0, contended(err)
		}
		first := max(row.Next, from)
		if want <= 0 || first > from+horizon {
			return 0, 0, nil
		}
		e, err := entity(pk, budgetRow, budgetNext{Next: first + int64(want)})
		if err != nil {
			return 0, 0, err
		}
		s.ops.Add(1)
		conflict := http.StatusPreconditionFailed
		if missing {
			conflict = http.StatusConflict
			_, err = s.table.AddEntity(ctx, e, nil)
		} else {
			tag := azcore.ETag(etag)
			_, err = s.table.UpdateEntity(ctx, e, &aztables.UpdateEntityOptions{IfMatch: &tag, UpdateMode: aztables.UpdateModeReplace})
		}
		if err == nil {
			return first, want, nil
		}
		if !hasCode(err, conflict) {
			return 0, 0, contended(err)
		}
		lost++
	}
	return 0, 0, nil
}
