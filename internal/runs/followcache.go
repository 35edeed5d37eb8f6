package runs

import (
	"sync"
	"time"

	"github.com/remediator/remediator/internal/remediate"
)

// followCache keeps the script results a follow=true read found for a
// page of a run, for a short time (FOLLOW_CACHE) and within a budget of
// bytes (FOLLOW_CACHE_MB): a flow polling a run with follow=true every
// few seconds reads each script's states from Intune once per period,
// not once per poll, however often it asks.
type followCache struct {
	mu       sync.Mutex
	ttl      time.Duration
	maxBytes int
	bytes    int
	entries  map[string]*followEntry
	order    []string // oldest first
}

type followEntry struct {
	at      time.Time
	results []*remediate.FollowUp // by the page's device index
	size    int
}

func newFollowCache(ttl time.Duration, maxBytes int) *followCache {
	return &followCache{ttl: ttl, maxBytes: maxBytes, entries: map[string]*followEntry{}}
}

// get copies a fresh entry's results into devs; it reports whether there
// was one.
func (c *followCache) get(key string, devs []remediate.DeviceResult) bool {
	if c.ttl <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || time.Since(e.at) > c.ttl || len(e.results) != len(devs) {
		return false
	}
	for i, f := range e.results {
		switch {
		case f != nil:
			cp := *f
			devs[i].FollowUp = &cp
		case devs[i].Outcome == remediate.Succeeded:
			// Triggered since the results were read: none yet.
			devs[i].FollowUp = &remediate.FollowUp{State: remediate.FollowPending}
		}
	}
	return true
}

// put keeps the results devs hold, evicting the oldest entries past the
// budget.
func (c *followCache) put(key string, devs []remediate.DeviceResult) {
	if c.ttl <= 0 {
		return
	}
	e := &followEntry{at: time.Now(), results: make([]*remediate.FollowUp, len(devs))}
	for i, d := range devs {
		if d.FollowUp != nil {
			cp := *d.FollowUp
			e.results[i] = &cp
			e.size += 128 + len(cp.Output) + len(cp.Error)
		}
	}
	if e.size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[key]; ok {
		c.bytes -= old.size
	} else {
		c.order = append(c.order, key)
	}
	c.entries[key], c.bytes = e, c.bytes+e.size
	for c.bytes > c.maxBytes && len(c.order) > 0 {
		oldest := c.order[0]
		c.order = c.order[1:]
		if old, ok := c.entries[oldest]; ok {
			c.bytes -= old.size
			delete(c.entries, oldest)
		}
	}
}
