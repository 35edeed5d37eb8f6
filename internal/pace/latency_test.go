package pace

import (
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
			times := deployment(procs, 20, SharedOptions{Store: store, Scope: "app"}, 16, 60*time.Second, 0)()
			ratio := float64(len(times)) / 60 / 20
			assert.GreaterOrEqual(t, ratio, 0.9, "%d processes", procs)
			assert.LessOrEqual(t, intunesim.MaxInWindow(times, 10*time.Second), 200+procs, "20/s: 200 in 10 s, and a call of burst each")
			assert.Less(t, float64(store.Ops())/float64(len(times)), 0.5, "%d processes: storage operations per call", procs)
		})
	}
}
