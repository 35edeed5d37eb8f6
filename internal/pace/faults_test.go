package pace

import (
	"context"
	"errors"
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

func (h *countingHang) Claim(ctx context.Context, _ ClaimRequest) (Claimed, error) {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	<-ctx.Done()
	return Claimed{}, ctx.Err()
}

func (h *countingHang) Throttled(ctx context.Context, _ string, _ time.Time) error {
	<-ctx.Done()
	return ctx.Err()
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

func (contended) Claim(ctx context.Context, _ ClaimRequest) (Claimed, error) {
	<-ctx.Done()
	return Claimed{}, ErrContended
}

func (contended) Throttled(context.Context, string, time.Time) error { return nil }

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

// skew sets the clock of p's shared write budget d ahead of true time.
func skew(p *Pacer, d time.Duration) {
	p.writeWait.(*sharedLimiter).now = func() time.Time { return time.Now().Add(d) }
}

// TestSkewedClocksShareOneTimeline: processes whose clocks are 2 s and 12 s
// ahead of the store's, or 12 s behind, follow the store's clock: together
// never over the budget in any window, and none starved.
func TestSkewedClocksShareOneTimeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		var mu sync.Mutex
		all := map[int]*[]time.Time{}
		var groups []*sync.WaitGroup
		for i, d := range []time.Duration{0, 2 * time.Second, 12 * time.Second, -12 * time.Second} {
			p := New(8, 100).WithShared(SharedOptions{Store: store, Scope: "app"})
			skew(p, d)
			times := &[]time.Time{}
			all[i] = times
			groups = append(groups, writeFor(p, "", 4, 60*time.Second, &mu, times))
		}
		for _, g := range groups {
			g.Wait()
		}
		var every []time.Time
		for i, times := range all {
			every = append(every, *times...)
			assert.Greater(t, len(*times), 40, "process %d is not starved", i)
		}
		assert.LessOrEqual(t, intunesim.MaxInWindow(every, 20*time.Second), 169, "8/s: 160 in 20 s, and a clock known to the second (a Date header) may be off by up to one: rate × (window + 1 s) + 1")
		assert.GreaterOrEqual(t, len(every), 420, "and the budget is used: 90% of 60 s × 8/s")
	})
}

// TestPushedBudgetIsRepaired: a budget whose next position a clock far
// ahead pushed minutes into the future is reset to the store's now, and
// the runs are told.
func TestPushedBudgetIsRepaired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		p := New(8, 100).WithShared(SharedOptions{Store: store, Scope: "app"})
		store.Push("app|default|w", time.Now().Add(10*time.Minute).UnixNano()/int64(125*time.Millisecond))
		start := time.Now()
		_, err := p.Write(context.Background())
		require.NoError(t, err)
		assert.Less(t, time.Since(start), 2*time.Second, "not ten minutes")
		assert.Contains(t, p.NotesSince(start)[0], "was reset")
	})
}

// TestRatesMustAgree: a process pacing at another rate than the budget's
// is refused with a clear error and keeps to its local share.
func TestRatesMustAgree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		a := New(8, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 10})
		b := New(7.5, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 10})
		start := time.Now()
		_, err := a.Write(context.Background())
		require.NoError(t, err)
		_, err = b.Write(context.Background())
		require.NoError(t, err, "served by its local share")
		why, fell := b.FellBackSince(start)
		assert.True(t, fell)
		assert.Contains(t, why, "different rates")
	})
}

// TestA429PausesEveryProcess: a 429 one process saw pauses the others at
// their next claim, and halves the budget's rate, which comes back slowly.
func TestA429PausesEveryProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		a := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app"})
		b := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app"})
		var mu sync.Mutex
		var before, after []time.Time
		writeFor(b, "", 2, 5*time.Second, &mu, &before).Wait()
		a.Throttled(30 * time.Second)
		time.Sleep(time.Second)
		start := time.Now()
		writeFor(b, "", 2, 60*time.Second, &mu, &after).Wait()
		require.NotEmpty(t, after)
		// b learns the pause at its next claim: it may use the positions it
		// already held (about two seconds of its use), then none until the
		// pause ends.
		during := 0
		for _, at := range after {
			if d := at.Sub(start); d > 3*time.Second && d < 25*time.Second {
				during++
			}
		}
		assert.Zero(t, during, "b honours a's pause")
		assert.Greater(t, after[len(after)-1].Sub(start), 25*time.Second)
		in20 := intunesim.MaxInWindow(after, 20*time.Second)
		assert.Less(t, in20, 160, "at a reduced share of 10/s after the 429 (%d in 20 s)", in20)
		assert.Greater(t, in20, 80, "and coming back")
	})
}

// TestOutageShareFromTheStore: a process cut off from the store paces at
// the rate over the processes the store last saw using the budget, not
// over BUDGET_PROCESSES.
func TestOutageShareFromTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		var ps []*Pacer
		for range 4 {
			p := New(20, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 40, Retry: time.Minute})
			_, err := p.Write(context.Background())
			require.NoError(t, err)
			ps = append(ps, p)
		}
		store.Fail(errors.New("storage unreachable"))
		var mu sync.Mutex
		var times []time.Time
		writeFor(ps[3], "", 4, 30*time.Second, &mu, &times).Wait()
		assert.InDelta(t, 150, len(times), 20, "20/s over 4 processes: 5/s, not 0.5/s")
	})
}

// TestClaimsFollowUse: a process that calls rarely claims a position at a
// time; a busy one claims many at once, so its storage calls per call
// stay low.
func TestClaimsFollowUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		idle, busy := &MemoryShared{}, &MemoryShared{}
		pi := New(8, 100).WithShared(SharedOptions{Store: idle, Scope: "app"})
		for range 10 {
			_, err := pi.Write(context.Background())
			require.NoError(t, err)
			time.Sleep(3 * time.Second)
		}
		l := pi.writeWait.(*sharedLimiter)
		l.mu.Lock()
		held := len(l.held)
		l.mu.Unlock()
		assert.LessOrEqual(t, held, 2, "an idle process holds no stock of positions")
		pb := New(8, 100).WithShared(SharedOptions{Store: busy, Scope: "app"})
		var mu sync.Mutex
		var times []time.Time
		writeFor(pb, "", 8, 30*time.Second, &mu, &times).Wait()
		assert.Less(t, float64(busy.Claims())/float64(len(times)), 0.25, "a busy process: few claims per call")
	})
}
