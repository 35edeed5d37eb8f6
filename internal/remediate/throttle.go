package remediate

import (
	"slices"
	"sync"
	"time"
)

// throttleLog records a run's 429s and the pauses they caused; pauses that
// overlap count once.
type throttleLog struct {
	mu     sync.Mutex
	n      int
	capped int
	pauses [][2]time.Time
}

// add records a 429 and its pause; capped when Graph's Retry-After was
// longer than the cap.
func (t *throttleLog) add(wait time.Duration, capped bool) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	if capped {
		t.capped++
	}
	t.pauses = append(t.pauses, [2]time.Time{now, now.Add(wait)})
}

func (t *throttleLog) count() (throttled, capped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n, t.capped
}

// waited is the length of the union of the pauses.
func (t *throttleLog) waited() time.Duration {
	t.mu.Lock()
	p := slices.Clone(t.pauses)
	t.mu.Unlock()
	slices.SortFunc(p, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var total time.Duration
	var end time.Time
	for _, iv := range p {
		start := iv[0]
		if start.Before(end) {
			start = end
		}
		if iv[1].After(start) {
			total += iv[1].Sub(start)
			end = iv[1]
		}
	}
	return total
}
