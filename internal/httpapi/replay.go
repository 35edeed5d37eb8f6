package httpapi

import (
	"context"
	"sync"
	"time"
)

// replayCache makes repeated deliveries of one alert return the first
// delivery's answer instead of triggering the devices again. It lives in
// the process; durable idempotency comes with run storage.
type replayCache struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]*replayEntry
}

type replayEntry struct {
	done    chan struct{}
	result  Result
	expires time.Time
}

func newReplayCache(ttl time.Duration) *replayCache {
	return &replayCache{ttl: ttl, entries: map[string]*replayEntry{}}
}

// do runs fn once per key within the TTL; later calls with the key wait for
// the first and return its answer marked Idempotent-Replayed.
func (c *replayCache) do(ctx context.Context, key string, fn func() Result) Result {
	if key == "" {
		return fn()
	}
	now := time.Now()
	c.mu.Lock()
	for k, e := range c.entries {
		if !e.expires.IsZero() && now.After(e.expires) {
			delete(c.entries, k)
		}
	}
	if e, ok := c.entries[key]; ok {
		c.mu.Unlock()
		select {
		case <-e.done:
			r := e.result
			r.Headers = map[string]string{"Idempotent-Replayed": "true"}
			return r
		case <-ctx.Done():
			return Result{Status: 409, Body: errorBody("in_progress", "an earlier delivery of this alert is still being processed", nil)}
		}
	}
	e := &replayEntry{done: make(chan struct{})}
	c.entries[key] = e
	c.mu.Unlock()
	e.result = fn()
	c.mu.Lock()
	e.expires = time.Now().Add(c.ttl)
	c.mu.Unlock()
	close(e.done)
	return e.result
}
