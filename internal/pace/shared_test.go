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

// writeFor has workers goroutines write through p until d has passed and
// returns every write's time.
func writeFor(p *Pacer, tenant string, workers int, d time.Duration, mu *sync.Mutex, times *[]time.Time) *sync.WaitGroup {
	return callFor(p, tenant, workers, d, 0, mu, times)
}

// callFor is writeFor with calls that take latency each (a worker sends
// its next call when the last answered).
func callFor(p *Pacer, tenant string, workers int, d, latency time.Duration, mu *sync.Mutex, times *[]time.Time) *sync.WaitGroup {
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(end) {
				if _, err := p.For(tenant).Write(context.Background()); err != nil {
					return
				}
				if time.Now().After(end) {
					return // a write that waited past the end is not counted
				}
				mu.Lock()
				*times = append(*times, time.Now())
				mu.Unlock()
				time.Sleep(latency)
			}
		})
	}
	return &wg
}

// deployment starts n processes (Pacers at rate writes a second sharing
// o's store), each with workers writers calling for d, latency a call;
// its wait returns every write's time.
func deployment(n int, rate float64, o SharedOptions, workers int, d, latency time.Duration) (wait func() []time.Time) {
	var mu sync.Mutex
	var times []time.Time
	var gs []*sync.WaitGroup
	for range n {
		p := New(rate, 240).WithShared(o)
		gs = append(gs, callFor(p, "", workers, d, latency, &mu, &times))
	}
	return func() []time.Time {
		waitAll(gs...)
		return times
	}
}

// waitAll waits for every group.
func waitAll(gs ...*sync.WaitGroup) {
	for _, g := range gs {
		g.Wait()
	}
}

// TestSharedBudgetHoldsAcrossProcesses: three processes (three Pacers) of
// one deployment share a tenant's budget: together they never exceed it
// in any window, use at least 90% of it, and renew their leases, not
// their calls: few storage operations per call.
func TestSharedBudgetHoldsAcrossProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		times := deployment(3, 10, SharedOptions{Store: store, Scope: "app", Processes: 10}, 4, 30*time.Second, 0)()
		assert.LessOrEqual(t, intunesim.MaxInWindow(times, 20*time.Second), 203, "10/s: 200 in 20 s, and a call of burst each")
		assert.GreaterOrEqual(t, len(times), 270, "at least 90%% of 30 s × 10/s")
		assert.Less(t, float64(store.Ops())/float64(len(times)), 0.5, "storage operations per call")
	})
}

// TestSharedBudgetIsPerTenant: two tenants' budgets in one store are
// separate, and the default tenant named by id is the default budget.
func TestSharedBudgetIsPerTenant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		const def = "3f9c5a2e-0000-4000-8000-0000000000aa"
		p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", DefaultTenant: def})
		assert.Same(t, p, p.For(def))
		assert.Same(t, p, p.For(""))
		var mu sync.Mutex
		var a, b []time.Time
		waitAll(writeFor(p, "", 4, 10*time.Second, &mu, &a), writeFor(p, "tenant-b", 4, 10*time.Second, &mu, &b))
		assert.InDelta(t, 100, len(a), 10)
		assert.InDelta(t, 100, len(b), 10, "tenant B has its own 10/s")
	})
}

// TestSharedBudgetFallsBackToALocalShare: a process that never reached
// the store waits a lease's term (every lease granted before the outage
// has expired by then), paces itself at 1/Processes of the rate, says so,
// and returns to the shared budget when the store answers again.
func TestSharedBudgetFallsBackToALocalShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		store.Fail(errors.New("storage unreachable"))
		p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 5, Retry: 3 * time.Second})
		start := time.Now()
		var mu sync.Mutex
		var times []time.Time
		writeFor(p, "", 4, 20*time.Second, &mu, &times).Wait()
		require.NotEmpty(t, times)
		assert.GreaterOrEqual(t, times[0].Sub(start), DefaultLeaseTerm, "nothing before every lease of before the outage has expired")
		assert.InDelta(t, 28, len(times), 3, "then 2/s, a fifth of 10/s")
		why, fell := p.FellBackSince(start)
		assert.True(t, fell)
		assert.Contains(t, why, "storage unreachable")

		store.Fail(nil)
		time.Sleep(3 * time.Second)
		mid := time.Now()
		times = nil
		writeFor(p, "", 4, 10*time.Second, &mu, &times).Wait()
		assert.InDelta(t, 100, len(times), 10, "back on the shared budget")
		_, fell = p.FellBackSince(mid)
		assert.False(t, fell)
	})
}

// TestSharedBudgetHonoursContext: a wait for a share ends with its
// context; a store that hangs costs one call timeout and a lease's term.
func TestSharedBudgetHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &hanging{}
		p := New(1, 100).WithShared(SharedOptions{Store: store, Scope: "app", CallTimeout: time.Second, Processes: 1})
		start := time.Now()
		_, err := p.Write(context.Background())
		require.NoError(t, err, "the local share after a hung store")
		assert.Equal(t, 8*time.Second, time.Since(start), "a renewal timed out (1 s), a lease's term (6 s), then the local share's first token (1 s at 1/s)")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = p.Write(ctx)
		assert.ErrorIs(t, err, context.Canceled)
	})
}

// hanging is a store that hangs until its context ends, counting calls.
type hanging struct {
	mu    sync.Mutex
	calls int
}

func (h *hanging) hang(ctx context.Context) error {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// Calls is how many calls were made.
func (h *hanging) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

func (h *hanging) Renew(ctx context.Context, _ string, _ Lease) (Leases, error) {
	return Leases{}, h.hang(ctx)
}

func (h *hanging) Release(ctx context.Context, _ string, _ Lease) error { return h.hang(ctx) }

func (h *hanging) Throttled(ctx context.Context, _ string, _ time.Duration) error {
	return h.hang(ctx)
}

// TestSharedReadsFallBackInBatches: a $batch of 20 reads passes the local
// share too (its burst is a batch).
func TestSharedReadsFallBackInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer settle()
		store := &MemoryShared{}
		store.Fail(errors.New("down"))
		p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 4})
		for range 3 {
			_, err := p.Read(context.Background(), 20)
			require.NoError(t, err)
		}
	})
}

// TestFairShares: max-min fairness: demands below an equal split are met,
// the rest split what remains.
func TestFairShares(t *testing.T) {
	assert.InDelta(t, 2, fairShare(10, []float64{2, 10, 10}), 1e-9)
	assert.InDelta(t, 4, fairShare(10, []float64{10, 2, 10}), 1e-9)
	assert.InDelta(t, 10.0/3, fairShare(10, []float64{10, 10, 10}), 1e-9)
	assert.InDelta(t, 1, fairShare(10, []float64{1}), 1e-9)
	assert.Zero(t, fairShare(0, []float64{5, 5}))
}

// TestAllocateJudgesLeasesOnTheStoresClock: a live lease holds its share;
// one that expired within the last minute holds the outage share (its
// process may be cut off and pacing at it); an idle one, or one older
// than a minute, holds nothing; the capacity is the lowest rate any
// process is set to, times the 429 factor.
func TestAllocateJudgesLeasesOnTheStoresClock(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	lease := func(p string, share, demand float64, age time.Duration, idle bool) Lease {
		return Lease{Process: p, Rate: 10, Share: share, Demand: demand, Term: 6 * time.Second, Idle: idle, Written: now.Add(-age)}
	}
	ls := Leases{Now: now, Factor: 1, All: []Lease{
		lease("me", 1, 10, time.Second, false),
		lease("live", 3, 10, 5*time.Second, false),
		lease("expired", 3, 10, 30*time.Second, false),
		lease("idle", 0, 0, 10*time.Second, true),
		lease("gone", 3, 10, 2*time.Minute, false),
	}}
	pl := allocate("me", 10, 10, ls)
	assert.Equal(t, 4, pl.seen, "me, live, expired and idle used it within a minute")
	assert.InDelta(t, 10, pl.capacity, 1e-9)
	assert.InDelta(t, 3+2.5, pl.others, 1e-9, "live's share and expired's outage share (10/4)")
	assert.InDelta(t, 3.75, pl.target, 1e-9, "half of the 7.5 not reserved")
	assert.False(t, pl.mismatch)

	ls.All[1].Rate = 8
	ls.Factor = 0.5
	pl = allocate("me", 10, 10, ls)
	assert.True(t, pl.mismatch)
	assert.InDelta(t, 4, pl.capacity, 1e-9, "the lowest rate (8), halved after a 429")
}
