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
	pauses [][2]time.Time
}

func (t *throttleLog) add(wait time.Duration) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	t.pauses = append(t.pauses, [2]time.Time{now, now.Add(wait)})
}

func (t *throttleLog) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
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
