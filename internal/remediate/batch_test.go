package remediate

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/pace"
)

// throttlingGraph answers $batch lookups: the first time it sees an id
// ending in "t" it throttles that item (Retry-After 3 s), ids ending in
// "x" are never found, the rest are devices.
type throttlingGraph struct {
	Graph
	mu    sync.Mutex
	seen  map[string]bool
	calls []batchCall
}

type batchCall struct {
	at  time.Time
	ids []string
}

func (g *throttlingGraph) Devices(_ context.Context, ids []string) ([]intune.Lookup, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, batchCall{time.Now(), append([]string(nil), ids...)})
	out := make([]intune.Lookup, len(ids))
	for i, id := range ids {
		out[i].ID = id
		switch {
		case strings.HasSuffix(id, "t") && !g.seen[id]:
			g.seen[id] = true
			out[i].Err = &intune.Error{Status: 429, Code: "TooManyRequests", RetryAfter: "3", Message: "throttled"}
		case strings.HasSuffix(id, "x"):
			out[i].Err = &intune.Error{Status: 404, Code: "ResourceNotFound", Message: "no such device"}
		default:
			out[i].Device = &intune.Device{ID: id, OperatingSystem: "Windows"}
		}
	}
	return out, nil
}

// TestBatchItemsRetryThroughTheOneLoop: throttled items of a $batch are
// sent again, alone, once the Retry-After their 429 gave has passed; items
// found or failed for good are not sent again.
func TestBatchItemsRetryThroughTheOneLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &throttlingGraph{seen: map[string]bool{}}
		e := New(g, pace.New(100, 1000), Config{}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
		x := e.newExecution(context.Background(), time.Now(), 0, "")
		defer x.cancel()
		ids := []string{"a", "bt", "cx", "dt", "e"}
		found, errs := x.batchLookup2(ids)
		assert.Len(t, found, 4, "a, bt, dt and e, the throttled two on the retry")
		require.Contains(t, errs, "cx")
		assert.Equal(t, 404, errs["cx"].Status)
		require.Len(t, g.calls, 2)
		assert.Equal(t, []string{"bt", "dt"}, g.calls[1].ids, "only the throttled items are sent again")
		assert.GreaterOrEqual(t, g.calls[1].at.Sub(g.calls[0].at), 3*time.Second, "after the 429's Retry-After")
	})
}

// batchLookup2 is batchLookup with the maps it fills.
func (x *execution) batchLookup2(ids []string) (map[string]*intune.Device, map[string]*intune.Error) {
	found, errs := map[string]*intune.Device{}, map[string]*intune.Error{}
	x.batchLookup(ids, found, errs)
	return found, errs
}
