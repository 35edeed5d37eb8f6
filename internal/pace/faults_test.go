package pace

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
)

// freeze makes a sleep hook under which the process is frozen from from to
// to: every timer due in between fires at to, as after SIGSTOP, a VM pause
// or a long GC.
func freeze(from, to time.Time) func(context.Context, time.Duration) error {
	return func(ctx context.Context, d time.Duration) error {
		if wake := time.Now().Add(d); !wake.Before(from) && wake.Before(to) {
			d = time.Until(to)
		}
		return Sleep(ctx, d)
	}
}

// TestFrozenProcessNeverBunches: waiters released together by the end of a
// freeze go out at the pace, never at once, on the shared budget and on a
// process's own.
func TestFrozenProcessNeverBunches(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(map[bool]string{true: "shared", false: "local"}[shared], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := New(8, 100)
				start := time.Now()
				hook := freeze(start.Add(5*time.Second), start.Add(35*time.Second))
				if shared {
					p.WithShared(SharedOptions{Store: &MemoryShared{}, Scope: "app"})
					p.writeWait.(*sharedLimiter).sleep = hook
				} else {
					l := p.writeWait.(localLimiter)
					l.sleep = hook
					p.writeWait = l
				}
				var mu sync.Mutex
				var times []time.Time
				writeFor(p, "", 64, 50*time.Second, &mu, &times).Wait()
				var after []time.Time
				for _, at := range times {
					if !at.Before(start.Add(35 * time.Second)) {
						after = append(after, at)
					}
				}
				require.NotEmpty(t, after)
				assert.LessOrEqual(t, intunesim.MaxInWindow(after, time.Second), 9, "8/s after the freeze, not the 64 waiters at once")
				assert.LessOrEqual(t, intunesim.MaxInWindow(times, 20*time.Second), 161, "8/s: 160 in 20 s")
			})
		})
	}
}

// TestPauseEndsAtThePace: callers a 429 pause held resume at the pace when
// it ends, not all at once.
func TestPauseEndsAtThePace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(8, 100)
		var mu sync.Mutex
		var times []time.Time
		wg := writeFor(p, "", 64, 20*time.Second, &mu, &times)
		time.Sleep(2 * time.Second)
		p.Pause(5 * time.Second)
		wg.Wait()
		assert.LessOrEqual(t, intunesim.MaxInWindow(times, time.Second), 9, "8/s, never the held callers at once")
	})
}

// countingHang is a store that hangs until its context ends, counting
// the calls made to it.
type countingHang struct {
	mu    sync.Mutex
	calls int
}

func (h *countingHang) Claim(ctx context.Context, _ string, _ int64, _ int, _ int64) (int64, int, error) {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	<-ctx.Done()
	return 0, 0, ctx.Err()
}

// TestWaiterCrowdDuringAnOutage: 64 callers waiting when the store hangs
// make two store calls between them (one slow answer, then the outage),
// not one each, and all are served by the local share after two call
// timeouts, not 64.
func TestWaiterCrowdDuringAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &countingHang{}
		p := New(100, 100).WithShared(SharedOptions{Store: store, Scope: "app", CallTimeout: 2 * time.Second, Processes: 1, Retry: time.Minute})
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		for range 64 {
			wg.Go(func() {
				_, err := p.Write(context.Background())
				assert.NoError(t, err)
				mu.Lock()
				slowest = max(slowest, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		assert.LessOrEqual(t, store.calls, 3, "the waiters wait for the claim in flight")
		assert.Less(t, slowest, 6*time.Second, "two call timeouts and the local pace, not 64 × 2 s")
	})
}

// contended is a store that always loses the race for the row: it
// answers, slowly, that others won.
type contended struct{}

func (contended) Claim(ctx context.Context, _ string, _ int64, _ int, _ int64) (int64, int, error) {
	<-ctx.Done()
	return 0, 0, ErrContended
}

// TestLostRacesAreNoOutage: a claim whose time runs out while other
// processes keep winning the row is not a failure: the process never
// switches to its local share for it.
func TestLostRacesAreNoOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(10, 100).WithShared(SharedOptions{Store: contended{}, Scope: "app", CallTimeout: time.Second})
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := p.Write(ctx)
		assert.Error(t, err, "no position while the row is contended")
		_, fell := p.FellBackSince(start)
		assert.False(t, fell, "contention is not an outage")
	})
}
