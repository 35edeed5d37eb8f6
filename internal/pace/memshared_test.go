package pace

import (
	"context"
	"sync"
	"time"
)

// MemoryShared is a Shared kept in memory: the store of these tests, with
// the rules of internal/azstore's. It stamps each lease with its own clock
// (Skew ahead of true time), says its now to the second as a Date header
// does, and counts storage operations (two a renewal, one a release, two a
// 429). Fail makes every call fail until it is called with nil; Delay
// makes every operation take that long.
type MemoryShared struct {
	mu      sync.Mutex
	budgets map[string]*memBudget
	err     error
	ops     int
	Skew    time.Duration
	Delay   time.Duration
}

type memBudget struct {
	leases             map[string]Lease
	pausedUntil, thrAt time.Time
	base               float64
}

func (m *MemoryShared) budget(key string) *memBudget {
	if m.budgets == nil {
		m.budgets = map[string]*memBudget{}
	}
	b := m.budgets[key]
	if b == nil {
		b = &memBudget{leases: map[string]Lease{}}
		m.budgets[key] = b
	}
	return b
}

// op is one storage operation: its delay, then the store's state.
func (m *MemoryShared) op(ctx context.Context) (time.Time, error) {
	m.mu.Lock()
	d := m.Delay
	m.mu.Unlock()
	if d > 0 {
		if err := Sleep(ctx, d); err != nil {
			return time.Time{}, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops++
	return time.Now().Add(m.Skew), m.err
}

// Renew implements Shared.
func (m *MemoryShared) Renew(ctx context.Context, key string, mine Lease) (Leases, error) {
	if err := m.write(ctx, key, mine); err != nil {
		return Leases{}, err
	}
	now, err := m.op(ctx)
	if err != nil {
		return Leases{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.budget(key)
	out := Leases{Now: now.Truncate(time.Second), Factor: Factor(b.base, b.thrAt, now)}
	if now.Before(b.pausedUntil) {
		out.PausedUntil = b.pausedUntil
	}
	for _, l := range b.leases {
		out.All = append(out.All, l)
	}
	return out, nil
}

func (m *MemoryShared) write(ctx context.Context, key string, mine Lease) error {
	now, err := m.op(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mine.Written = now
	m.budget(key).leases[mine.Process] = mine
	return nil
}

// Release implements Shared.
func (m *MemoryShared) Release(ctx context.Context, key string, mine Lease) error {
	return m.write(ctx, key, mine)
}

// Throttled implements Shared.
func (m *MemoryShared) Throttled(ctx context.Context, key string, d time.Duration) error {
	if _, err := m.op(ctx); err != nil {
		return err
	}
	now, err := m.op(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.budget(key)
	if until := now.Truncate(time.Second).Add(d + time.Second); until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
	f := Factor(b.base, b.thrAt, now)
	b.base, b.thrAt = max(f/2, 0.05), now
	return nil
}

// Lease is the lease of process in budget key as the store holds it.
func (m *MemoryShared) Lease(key, process string) (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.budget(key).leases[process]
	return l, ok
}

// Fail makes every call fail with err (nil: succeed again).
func (m *MemoryShared) Fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// Ops is how many storage operations were made.
func (m *MemoryShared) Ops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// settle lets every renewer of a synctest bubble see its process idle
// and end (a renewer ends when its budget is unused, after at most a
// retry period), so the bubble ends with no goroutine left.
func settle() { time.Sleep(3 * time.Minute) }
