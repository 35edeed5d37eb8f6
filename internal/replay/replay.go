// Package replay keeps answers by idempotency key (an Idempotency-Key
// header, or an alert's id and fired time), so a request delivered twice is
// answered twice and carried out once. Memory is the process-local store;
// package azstore keeps them in Azure Tables.
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"
)

// Store keeps answers by key.
type Store interface {
	// Begin reserves key for ttl. It returns the stored answer when the
	// key was answered before, and ErrInProgress while another request
	// holds it.
	Begin(ctx context.Context, key string, ttl time.Duration) (*Stored, error)
	// Finish stores the answer for key.
	Finish(ctx context.Context, key string, s Stored) error
	// Abandon releases key without an answer, so a retry runs anew.
	Abandon(ctx context.Context, key string) error
}

// ErrInProgress is returned by Store.Begin for a key being answered.
var ErrInProgress = errors.New("replay: a request with this key is in progress")

// Stored is a kept answer.
type Stored struct {
	Status      int               `json:"status"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        json.RawMessage   `json:"body"`
	RequestHash string            `json:"request_hash"`
}

// Memory is a process-local Store: answers survive only as long as the
// process, and only up to a budget of bytes, oldest answers evicted
// first (a retry after its answer was evicted runs again). Deployments
// with storage use the durable one.
type Memory struct {
	mu       sync.Mutex
	entries  map[string]*memEntry
	order    []string // finished keys, oldest first
	bytes    int64
	maxBytes int64
}

type memEntry struct {
	stored  *Stored
	expires time.Time
	size    int64
}

// DefaultMemoryBytes is the default budget of a Memory.
const DefaultMemoryBytes = 32 << 20

// NewMemory returns an empty Memory keeping answers of at most
// DefaultMemoryBytes in all.
func NewMemory() *Memory { return NewMemoryBounded(DefaultMemoryBytes) }

// NewMemoryBounded returns an empty Memory keeping answers of at most
// maxBytes in all.
func NewMemoryBounded(maxBytes int64) *Memory {
	return &Memory{entries: map[string]*memEntry{}, maxBytes: maxBytes}
}

// Begin implements Store.
func (m *Memory) Begin(_ context.Context, key string, ttl time.Duration) (*Stored, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.entries {
		if now.After(e.expires) {
			m.bytes -= e.size
			delete(m.entries, k)
		}
	}
	if e, ok := m.entries[key]; ok {
		if e.stored == nil {
			return nil, ErrInProgress
		}
		return e.stored, nil
	}
	m.entries[key] = &memEntry{expires: now.Add(ttl)}
	return nil, nil
}

// Finish implements Store. An answer larger than the whole budget is not
// kept.
func (m *Memory) Finish(_ context.Context, key string, s Stored) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok {
		return nil
	}
	size := int64(len(s.Body)+len(s.RequestHash)+len(key)) + 256
	for k, v := range s.Headers {
		size += int64(len(k) + len(v))
	}
	if size > m.maxBytes {
		delete(m.entries, key)
		return nil
	}
	e.stored, e.size = &s, size
	m.bytes += size
	m.order = append(m.order, key)
	for m.bytes > m.maxBytes && len(m.order) > 0 {
		oldest := m.order[0]
		m.order = m.order[1:]
		if old, ok := m.entries[oldest]; ok && old.stored != nil {
			m.bytes -= old.size
			delete(m.entries, oldest)
		}
	}
	return nil
}

// Abandon implements Store.
func (m *Memory) Abandon(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		m.bytes -= e.size
		delete(m.entries, key)
	}
	return nil
}

// Bytes is the size of the answers kept.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

// Kept returns the answers kept so far, by key (for tests and audits).
func (m *Memory) Kept() map[string]Stored {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Stored{}
	for k, e := range m.entries {
		if e.stored != nil {
			out[k] = *e.stored
		}
	}
	return out
}

var _ Store = (*Memory)(nil)
