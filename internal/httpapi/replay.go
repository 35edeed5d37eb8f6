package httpapi

import (
	"context"
	"sync"
	"time"
)

// MemoryReplays is a process-local Replays: answers survive only as long
// as the process. Deployments with storage use the durable one.
type MemoryReplays struct {
	mu      sync.Mutex
	entries map[string]*memReplay
}

type memReplay struct {
	stored  *Stored
	expires time.Time
}

// NewMemoryReplays returns an empty MemoryReplays.
func NewMemoryReplays() *MemoryReplays { return &MemoryReplays{entries: map[string]*memReplay{}} }

// Begin implements Replays.
func (m *MemoryReplays) Begin(_ context.Context, key string, ttl time.Duration) (*Stored, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.entries {
		if now.After(e.expires) {
			delete(m.entries, k)
		}
	}
	if e, ok := m.entries[key]; ok {
		if e.stored == nil {
			return nil, ErrInProgress
		}
		return e.stored, nil
	}
	m.entries[key] = &memReplay{expires: now.Add(ttl)}
	return nil, nil
}

// Finish implements Replays.
func (m *MemoryReplays) Finish(_ context.Context, key string, s Stored) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		e.stored = &s
	}
	return nil
}

// Abandon implements Replays.
func (m *MemoryReplays) Abandon(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
	return nil
}
