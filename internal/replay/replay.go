// Package replay keeps answers by idempotency key (an Idempotency-Key
// header, or an alert's id and fired time), so a request delivered twice is
// answered twice and carried out once. Memory is the process-local store;
// package azstore keeps them in Azure Tables.
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
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

// Key is the store's key for a caller's key of a kind (an Idempotency-Key,
// an alert's id): callers never replay, nor block, each other's.
func Key(kind, owner, key string) string {
	return kind + ":" + strconv.Quote(owner) + ":" + key
}

// ownerOf is the owner a Key names ("" for a key made otherwise).
func ownerOf(key string) string {
	_, rest, ok := strings.Cut(key, ":")
	if !ok || !strings.HasPrefix(rest, `"`) {
		return ""
	}
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return ""
	}
	owner, _ := strconv.Unquote(q)
	return owner
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
// process, and only up to a budget of bytes. When the budget is full, the
// oldest answer of the owner (the caller of Key) keeping the most is
// evicted: one caller's flood of keys evicts its own answers, never
// another caller's (a retry after its answer was evicted runs again).
// Deployments with storage use the durable one.
type Memory struct {
	mu       sync.Mutex
	entries  map[string]*memEntry
	owners   map[string]*owned
	bytes    int64
	maxBytes int64
}

// owned is what one owner keeps: its finished keys, oldest first.
type owned struct {
	order []string
	bytes int64
}

type memEntry struct {
	stored  *Stored
	expires time.Time
	size    int64
	owner   string
}

// DefaultMemoryBytes is the default budget of a Memory.
const DefaultMemoryBytes = 32 << 20

// NewMemory returns an empty Memory keeping answers of at most
// DefaultMemoryBytes in all.
func NewMemory() *Memory { return NewMemoryBounded(DefaultMemoryBytes) }

// NewMemoryBounded returns an empty Memory keeping answers of at most
// maxBytes in all.
func NewMemoryBounded(maxBytes int64) *Memory {
	return &Memory{entries: map[string]*memEntry{}, owners: map[string]*owned{}, maxBytes: maxBytes}
}

// Begin implements Store.
func (m *Memory) Begin(_ context.Context, key string, ttl time.Duration) (*Stored, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.entries {
		if now.After(e.expires) {
			m.drop(k, e)
		}
	}
	if e, ok := m.entries[key]; ok {
		if e.stored == nil {
			return nil, ErrInProgress
		}
		return e.stored, nil
	}
	m.entries[key] = &memEntry{expires: now.Add(ttl), owner: ownerOf(key)}
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
	o := m.owners[e.owner]
	if o == nil {
		o = &owned{}
		m.owners[e.owner] = o
	}
	o.order, o.bytes = append(o.order, key), o.bytes+size
	for m.bytes > m.maxBytes {
		var most *owned
		for _, c := range m.owners {
			if most == nil || c.bytes > most.bytes {
				most = c
			}
		}
		if most == nil || len(most.order) == 0 {
			break
		}
		oldest := most.order[0]
		if old, ok := m.entries[oldest]; ok && old.stored != nil {
			m.drop(oldest, old)
		} else {
			most.order = most.order[1:]
		}
	}
	return nil
}

// drop forgets key (an answer evicted or expired, or a key released).
func (m *Memory) drop(key string, e *memEntry) {
	delete(m.entries, key)
	if e.stored == nil {
		return
	}
	m.bytes -= e.size
	if o := m.owners[e.owner]; o != nil {
		o.bytes -= e.size
		if i := slices.Index(o.order, key); i >= 0 {
			o.order = slices.Delete(o.order, i, i+1)
		}
		if len(o.order) == 0 {
			delete(m.owners, e.owner)
		}
	}
}

// Abandon implements Store.
func (m *Memory) Abandon(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		m.drop(key, e)
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
