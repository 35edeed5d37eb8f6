package pace

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/remediator/remediator/internal/intunesim"
)

// slowStore is a MemoryShared behind storage that takes delay an
// operation, with Azure Tables' optimistic concurrency: a claim reads the
// row, and its write loses when another claim wrote the row meanwhile.
type slowStore struct {
	*MemoryShared
	delay time.Duration
}

func (s slowStore) Claim(ctx context.Context, req ClaimRequest) (Claimed, error) {
	lost := 0
	for range 16 {
		s.mu.Lock()
		seen := s.budget(req.Key).next
		s.mu.Unlock()
		time.Sleep(s.delay) // the read's answer, then the write's request
		if err := ctx.Err(); err != nil {
			if lost > 0 {
				return Claimed{}, ErrContended // as internal/azstore says it
			}
			return Claimed{}, err
		}
		s.mu.Lock()
		changed := s.budget(req.Key).next != seen
		s.mu.Unlock()
		if changed {
			lost++
			continue // lost the race: read again
		}
		c, err := s.MemoryShared.Claim(context.WithoutCancel(ctx), req)
		time.Sleep(s.delay)
		return c, err
	}
	return Claimed{}, nil
}

// TestSlowContendedStorageKeepsThePace: with 150 ms an operation and the
// races it brings, 3 or 8 processes of 16 waiters each still follow one
// timeline: never over the budget, and at 85% of it or more.
func TestSlowContendedStorageKeepsThePace(t *testing.T) {
	for _, procs := range []int{3, 8} {
		synctest.Test(t, func(t *testing.T) {
			store := slowStore{&MemoryShared{}, 150 * time.Millisecond}
			var mu sync.Mutex
			var times []time.Time
			var gs []*sync.WaitGroup
			for range procs {
				p := New(20, 240).WithShared(SharedOptions{Store: store, Scope: "app"})
				gs = append(gs, writeFor(p, "", 16, 60*time.Second, &mu, &times))
			}
			for _, g := range gs {
				g.Wait()
			}
			ratio := float64(len(times)) / 60 / 20
			assert.GreaterOrEqual(t, ratio, 0.85, "%d processes", procs)
			assert.LessOrEqual(t, intunesim.MaxInWindow(times, 10*time.Second), 201, "20/s: 200 in 10 s")
			assert.Less(t, 2*float64(store.Claims())/float64(len(times)), 1.0, "%d processes: storage operations per call", procs)
		})
	}
}
