package pace

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
)

// freeze makes sleep hooks under which the process is frozen from from to
// to: every timer due in between fires at to, as after SIGSTOP, a VM pause
// or a long GC.
func freeze(from, to time.Time) (func(context.Context, time.Duration) error, func(context.Context, time.Duration, <-chan struct{}) error) {
	frozen := func(d time.Duration) (time.Duration, bool) {
		if wake := time.Now().Add(d); !wake.Before(from) && wake.Before(to) {
			return time.Until(to), true
		}
		return d, false
	}
	return func(ctx context.Context, d time.Duration) error {
			d, _ = frozen(d)
			return Sleep(ctx, d)
		}, func(ctx context.Context, d time.Duration, changed <-chan struct{}) error {
			if d, ok := frozen(d); ok || !time.Now().Before(from) && time.Now().Before(to) {
				return Sleep(ctx, max(d, time.Until(to)))
			}
			return sleepOrChange(ctx, d, changed)
		}
}

// TestFrozenProcessNeverBunches: waiters released together by the end of a
// freeze go out at the pace, never at once, on the shared budget and on a
// process's own; the frozen process's lease ran out meanwhile, so it
// renews before it sends.
func TestFrozenProcessNeverBunches(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(map[bool]string{true: "shared", false: "local"}[shared], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				defer settle()
				p := New(8, 100)
				start := time.Now()
				local, lease := freeze(start.Add(5*time.Second), start.Add(35*time.Second))
				if shared {
					p.WithShared(SharedOptions{Store: &MemoryShared{}, Scope: "app"})
					p.writeWait.(*sharedLimiter).sleep = lease
				} else {
					l := p.writeWait.(localLimiter)
					l.sleep = local
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
		defer settle()
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

// TestWaiterCrowdDuringAnOutage: 64 callers waiting when the store hangs
// make one store call between them, not one each, and are served by the
// local share after one call timeout and a lease's term, not 64 timeouts.
func TestWaiterCrowdDuringAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &hanging{}
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
		assert.Equal(t, 1, store.Calls(), "the waiters wait for the renewal in flight")
		assert.Less(t, slowest, 2*time.Second+DefaultLeaseTerm+time.Second, "a call timeout, a term and the local pace, not 64 × 2 s")
	})
}

// skew sets the clock of p's shared write budget d ahead of true time.
func skew(p *Pacer, d time.Duration) {
	p.writeWait.(*sharedLimiter).now = func() time.Time { return time.Now().Add(d) }
}

// TestSkewedClocksShareOneBudget: processes whose clocks are 2 s and 12 s
// ahead of the store's, or 12 s behind, and a store whose clock is an
// hour ahead of all: leases are judged on the store's clock and lasts on
// each process's own, so together they never exceed the budget in any
// window, and none is starved.
func TestSkewedClocksShareOneBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{Skew: time.Hour}
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
		waitAll(groups...)
		var every []time.Time
		for i, times := range all {
			every = append(every, *times...)
			assert.Greater(t, len(*times), 90, "process %d is not starved: about a quarter of 480", i)
		}
		assert.LessOrEqual(t, intunesim.MaxInWindow(every, 20*time.Second), 164, "8/s: 160 in 20 s, and a call of burst each")
		assert.GreaterOrEqual(t, len(every), 432, "and the budget is used: 90% of 60 s × 8/s")
	})
}

// TestDifferentRatesPaceWithinTheLowest: processes set to different rates
// share the budget within the lowest, and the runs are told.
func TestDifferentRatesPaceWithinTheLowest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		a := New(8, 100).WithShared(SharedOptions{Store: store, Scope: "app"})
		b := New(7.5, 100).WithShared(SharedOptions{Store: store, Scope: "app"})
		start := time.Now()
		var mu sync.Mutex
		var times []time.Time
		waitAll(writeFor(a, "", 4, 40*time.Second, &mu, &times), writeFor(b, "", 4, 40*time.Second, &mu, &times))
		assert.LessOrEqual(t, intunesim.MaxInWindow(times, 20*time.Second), 152, "7.5/s: 150 in 20 s")
		assert.Greater(t, len(times), 270, "90% of 40 s × 7.5/s")
		assert.Contains(t, fmt.Sprint(a.NotesSince(start), b.NotesSince(start)), "different rates")
	})
}

// TestA429PausesEveryProcess: a 429 one process saw pauses the others at
// their next renewal, and halves the budget's rate, which comes back
// slowly.
func TestA429PausesEveryProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
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
		// b learns the pause at its next renewal.
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
// the rate over the processes the store last showed using the budget, not
// over BUDGET_PROCESSES.
func TestOutageShareFromTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		var ps []*Pacer
		for range 4 {
			p := New(20, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 40, Retry: time.Minute})
			_, err := p.Write(context.Background())
			require.NoError(t, err)
			ps = append(ps, p)
		}
		time.Sleep(10 * time.Second) // each gives its lease up
		store.Fail(errors.New("storage unreachable"))
		var mu sync.Mutex
		var times []time.Time
		writeFor(ps[3], "", 4, 60*time.Second, &mu, &times).Wait()
		assert.InDelta(t, 270, len(times), 20, "nothing for a term after the first failure, then 20/s over 4 processes: 5/s, not 0.5/s")
	})
}

// TestOutageTransitionsStayWithinTheBudget: three busy processes lose the
// store for 30 s and get it back; going out and coming back, no window
// holds more than the budget.
func TestOutageTransitionsStayWithinTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		wait := deployment(3, 10, SharedOptions{Store: store, Scope: "app", Processes: 40}, 8, 90*time.Second, 0)
		time.Sleep(20 * time.Second)
		store.Fail(errors.New("storage unreachable"))
		time.Sleep(30 * time.Second)
		store.Fail(nil)
		times := wait()
		assert.LessOrEqual(t, intunesim.MaxInWindow(times, 20*time.Second), 203, "10/s: 200 in 20 s, and a call of burst each")
		assert.Greater(t, len(times), 700, "the outage share keeps them going: 90 s at 10/s is 900")
	})
}

// TestLeasesFollowUse: twenty processes with one sequential writer each
// (300 ms a call) reach the budget between them, and a process that stops
// gives its lease up, so the others take its share.
func TestLeasesFollowUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		times := deployment(20, 8, SharedOptions{Store: store, Scope: "app"}, 1, 60*time.Second, 300*time.Millisecond)()
		assert.GreaterOrEqual(t, float64(len(times))/60/8, 0.9, "ratio to the budget")
		assert.LessOrEqual(t, intunesim.MaxInWindow(times, 20*time.Second), 180, "8/s: 160 in 20 s, and a call of burst each")

		// One stops; after it gave its lease up the other takes all.
		idle := New(8, 100).WithShared(SharedOptions{Store: store, Scope: "solo", Process: "idle"})
		busy := New(8, 100).WithShared(SharedOptions{Store: store, Scope: "solo"})
		var mu sync.Mutex
		times = nil
		waitAll(writeFor(idle, "", 2, 10*time.Second, &mu, &times), writeFor(busy, "", 2, 10*time.Second, &mu, &times))
		time.Sleep(5 * time.Second)
		l, ok := store.Lease("solo|default|w", "idle")
		require.True(t, ok)
		assert.True(t, l.Idle, "a process that stopped gives its lease up")
		times = nil
		writeFor(busy, "", 2, 20*time.Second, &mu, &times).Wait()
		assert.Greater(t, len(times), 144, "the other takes the whole budget: 90% of 20 s × 8/s")
	})
}

// TestAnOutageIsTheStores: a process whose reads found the store down
// serves its first writes at the outage share without waiting another
// lease's term; an idle budget used again during the outage asks the
// store once before it does (the store may be back).
func TestAnOutageIsTheStores(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		store.Fail(errors.New("storage unreachable"))
		p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 5})
		start := time.Now()
		_, err := p.Read(context.Background(), 1)
		require.NoError(t, err)
		read := time.Since(start)
		assert.GreaterOrEqual(t, read, DefaultLeaseTerm, "nothing before every lease of before the outage has expired")
		_, err = p.Write(context.Background())
		require.NoError(t, err)
		assert.Less(t, time.Since(start)-read, time.Second, "the writes' budget knows the outage already: a token at 2/s")

		time.Sleep(time.Minute) // both budgets go idle
		ops := store.Ops()
		store.Fail(nil)
		_, err = p.Write(context.Background())
		require.NoError(t, err)
		assert.Greater(t, store.Ops(), ops, "the store was asked before the outage share was used again")
	})
}
