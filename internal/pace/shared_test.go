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
			}
		})
	}
	return &wg
}

// TestSharedBudgetHoldsAcrossProcesses: three processes (three Pacers) of
// one deployment share a tenant's budget: together they never exceed it
// in any window, and together they use at least 90% of it.
func TestSharedBudgetHoldsAcrossProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		var mu sync.Mutex
		var times []time.Time
		var groups []*sync.WaitGroup
		for range 3 {
			p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 10})
			groups = append(groups, writeFor(p, "", 4, 30*time.Second, &mu, &times))
		}
		for _, g := range groups {
			g.Wait()
		}
		assert.LessOrEqual(t, intunesim.MaxInWindow(times, 20*time.Second), 202, "10/s: 200 in 20 s, and a position may be used 100 ms late")
		assert.GreaterOrEqual(t, len(times), 270, "at least 90%% of 30 s × 10/s")
		assert.LessOrEqual(t, store.Claims(), len(times)/3, "a claim brings several positions")
	})
}

// TestSharedBudgetIsPerTenant: two tenants' budgets in one store are
// separate, and the default tenant named by id is the default budget.
func TestSharedBudgetIsPerTenant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		const def = "3f9c5a2e-0000-4000-8000-0000000000aa"
		p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", DefaultTenant: def})
		assert.Same(t, p, p.For(def))
		assert.Same(t, p, p.For(""))
		var mu sync.Mutex
		var a, b []time.Time
		ga := writeFor(p, "", 4, 10*time.Second, &mu, &a)
		gb := writeFor(p, "tenant-b", 4, 10*time.Second, &mu, &b)
		ga.Wait()
		gb.Wait()
		assert.InDelta(t, 100, len(a), 10)
		assert.InDelta(t, 100, len(b), 10, "tenant B has its own 10/s")
	})
}

// TestSharedBudgetFallsBackToALocalShare: when the store cannot be reached
// a process paces itself at 1/Processes of the rate (so even every process
// cut off at once stays under the budget), says so, and returns to the
// shared budget when the store answers again.
func TestSharedBudgetFallsBackToALocalShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		store.Fail(errors.New("storage unreachable"))
		p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 5, Retry: 3 * time.Second})
		start := time.Now()
		var mu sync.Mutex
		var times []time.Time
		writeFor(p, "", 4, 10*time.Second, &mu, &times).Wait()
		assert.InDelta(t, 20, len(times), 3, "2/s: a fifth of 10/s")
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

// TestSharedBudgetHonoursContext: a wait for positions ends with its
// context, and a store that hangs costs two CallTimeouts at most.
func TestSharedBudgetHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 100).WithShared(SharedOptions{Store: hanging{}, Scope: "app", CallTimeout: time.Second, Processes: 1})
		start := time.Now()
		_, err := p.Write(context.Background())
		require.NoError(t, err, "the local share after a hung store")
		assert.Equal(t, 3*time.Second, time.Since(start), "two claims timed out (the store is down, not slow once), then the local share's first slot: it starts empty, 1 s at 1/s")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = p.Write(ctx)
		assert.ErrorIs(t, err, context.Canceled)
	})
}

type hanging struct{}

func (hanging) Claim(ctx context.Context, _ ClaimRequest) (Claimed, error) {
	<-ctx.Done()
	return Claimed{}, ctx.Err()
}

func (hanging) Throttled(ctx context.Context, _ string, _ time.Time) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestSharedReadsFallBackInBatches: a $batch of 20 reads passes the local
// share too (its burst is a batch).
func TestSharedReadsFallBackInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &MemoryShared{}
		store.Fail(errors.New("down"))
		p := New(10, 100).WithShared(SharedOptions{Store: store, Scope: "app", Processes: 4})
		for range 3 {
			_, err := p.Read(context.Background(), 20)
			require.NoError(t, err)
		}
	})
}

// MemoryShared is a Shared kept in memory: the store of these tests,
// with the rules of internal/azstore's (its clock is the store's, to the
// second as a Date header says it; a claim from past its now plus half
// the horizon is served from its now; a row pushed past its now plus two
// horizons is reset; the spacing is the budget's). Fail makes every claim
// fail until it is called with nil.
type MemoryShared struct {
	mu      sync.Mutex
	budgets map[string]*memBudget
	err     error
	claims  int
}

type memBudget struct {
	next, spacing      int64
	processes          map[string]time.Time
	pausedUntil, thrAt time.Time
	base               float64
}

func (m *MemoryShared) budget(key string) *memBudget {
	if m.budgets == nil {
		m.budgets = map[string]*memBudget{}
	}
	b := m.budgets[key]
	if b == nil {
		b = &memBudget{processes: map[string]time.Time{}}
		m.budgets[key] = b
	}
	return b
}

// Claim implements Shared.
func (m *MemoryShared) Claim(ctx context.Context, req ClaimRequest) (Claimed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims++
	if m.err != nil {
		return Claimed{}, m.err
	}
	b := m.budget(req.Key)
	now := time.Now()
	sp := int64(req.Spacing)
	if b.spacing != 0 && sp != b.spacing {
		return Claimed{}, ErrRateMismatch
	}
	out := Claimed{StoreTime: now.Truncate(time.Second), Factor: 1}
	if !b.thrAt.IsZero() {
		out.Factor = Factor(b.base, b.thrAt, now)
	}
	if now.Before(b.pausedUntil) {
		out.PausedUntil = b.pausedUntil
	}
	storeNow := now.UnixNano() / sp
	from := min(req.From, storeNow+max(req.Horizon/2, 1))
	first := max(b.next, from)
	if b.next > storeNow+2*max(req.Horizon, 1) {
		first, out.Repaired = from, true
	}
	if req.Want <= 0 || first > from+req.Horizon {
		return out, ctx.Err()
	}
	b.next, b.spacing = first+int64(req.Want), sp
	b.processes[req.Process] = now
	for id, at := range b.processes {
		if now.Sub(at) > time.Minute {
			delete(b.processes, id)
		}
	}
	out.First, out.Got, out.Processes = first, req.Want, len(b.processes)
	return out, ctx.Err()
}

// Throttled implements Shared.
func (m *MemoryShared) Throttled(_ context.Context, key string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	b := m.budget(key)
	now := time.Now()
	if until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
	f := 1.0
	if !b.thrAt.IsZero() {
		f = Factor(b.base, b.thrAt, now)
	}
	b.base, b.thrAt = max(f/2, 0.05), now
	return nil
}

// Push sets a budget's next position (a clock that ran ahead pushed it).
func (m *MemoryShared) Push(key string, next int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.budget(key).next = next
}

// Fail makes claims fail with err (nil: succeed again).
func (m *MemoryShared) Fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// Claims is how many claims were made.
func (m *MemoryShared) Claims() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.claims
}
