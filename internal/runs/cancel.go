package runs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/remediator/remediator/internal/remediate"
)

// Cancel stops run id for its caller: the run is marked cancelled, chunks
// no worker has had yet end at once, and a chunk being worked stops before
// its next slice of triggers; their devices not yet triggered end
// not_attempted, reason cancelled, and devices already triggered stay as
// they are. Cancelling again changes nothing. It returns the run's status
// (page 0) as it stands after the cancel.
func (s *Service) Cancel(ctx context.Context, id, caller string) (Status, error) {
	if _, err := s.callersRun(ctx, id, caller); err != nil {
		return Status{}, err
	}
	now := time.Now().UTC()
	m, err := s.store.Update(ctx, id, func(m *Meta) bool {
		if !m.Cancelled.IsZero() {
			return false // the first cancel's time stands
		}
		m.Cancelled = now
		return true
	})
	if err != nil {
		return Status{}, err
	}
	chunks, err := s.store.Chunks(ctx, id)
	if err != nil {
		return Status{}, err
	}
	for i := range chunks {
		c := &chunks[i]
		if c.Queued || c.Open == 0 {
			continue // a worker accounts for it (Work finds the run cancelled)
		}
		if err := s.cancelChunk(ctx, m, c); err != nil && !errors.Is(err, ErrConflict) {
			return Status{}, err
		}
	}
	return s.Status(ctx, id, caller, 0, false)
}

// cancelChunk ends the devices of chunk c not yet triggered as cancelled.
func (s *Service) cancelChunk(ctx context.Context, m Meta, c *Chunk) error {
	msg, err := s.messageOf(ctx, m.RunID, c)
	if err != nil || len(msg.Items) == 0 {
		return err
	}
	c2, rows, err := s.load(ctx, msg)
	if err != nil {
		return err
	}
	return s.record(ctx, m.RunID, c2, cancelled(m, msg.Items, rows))
}

// cancelled is the rows of items not yet final, ended as cancelled.
func cancelled(m Meta, items []WorkItem, rows map[int]*Row) []Row {
	var out []Row
	for _, it := range items {
		r := rows[it.Index]
		if r.final() || !r.ClaimedAt.IsZero() {
			continue // done, or its trigger may be on its way: its delivery settles it
		}
		r.Outcome, r.Reason = remediate.NotAttempted, remediate.ReasonCancelled
		r.Message = fmt.Sprintf("the run was cancelled at %s before this device was triggered", m.Cancelled.Format(time.RFC3339))
		out = append(out, *r)
	}
	return out
}

// cancelledRun reports whether run has been cancelled since Work began
// (one storage read): a chunk being worked stops before its next slice.
func (s *Service) cancelledRun(ctx context.Context, run string) (Meta, bool) {
	m, err := s.store.Meta(ctx, run)
	return m, err == nil && !m.Cancelled.IsZero()
}
