package pace

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/remediator/remediator/internal/intunesim"
)

// TestSlowStorageKeepsThePace: with 150 ms a storage operation, 3 or 8
// processes of 16 waiters each share one budget: never over it, at 90% of
// it or more, and with storage operations per call that stay low as
// processes grow (each renews its own lease; nothing is contended).
func TestSlowStorageKeepsThePace(t *testing.T) {
	for _, procs := range []int{3, 8} {
		synctest.Test(t, func(t *testing.T) {
			defer settle()
			store := &MemoryShared{Delay: 150 * time.Millisecond}
			var mu sync.Mutex
			var times []time.Time
			var gs []*sync.WaitGroup
			for range procs {
				p := New(20, 240).WithShared(SharedOptions{Store: store, Scope: "app"})
				gs = append(gs, writeFor(p, "", 16, 60*time.Second, &mu, &times))
			}
			waitAll(gs...)
			ratio := float64(len(times)) / 60 / 20
			assert.GreaterOrEqual(t, ratio, 0.9, "%d processes", procs)
			assert.LessOrEqual(t, intunesim.MaxInWindow(times, 10*time.Second), 200+procs, "20/s: 200 in 10 s, and a call of burst each")
			assert.Less(t, float64(store.Ops())/float64(len(times)), 0.5, "%d processes: storage operations per call", procs)
		})
	}
}
