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
// process. Deployments with storage use the durable one.
type Memory struct {
	mu      sync.Mutex
	entries map[string]*memEntry
}

type memEntry struct {
	stored  *Stored
	expires time.Time
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{entries: map[string]*memEntry{}} }

// Begin implements Store.
func (m *Memory) Begin(_ context.Context, key string, ttl time.Duration) (*Stored, error) {
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
	m.entries[key] = &memEntry{expires: now.Add(ttl)}
	return nil, nil
}

// Finish implements Store.
func (m *Memory) Finish(_ context.Context, key string, s Stored) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		e.stored = &s
	}
	return nil
}

// Abandon implements Store.
func (m *Memory) Abandon(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
	return nil
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
