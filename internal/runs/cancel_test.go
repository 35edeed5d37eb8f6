package runs_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// TestCancelStopsTheRun: a run cancelled after its first chunk keeps that
// chunk's devices as they are, ends every other device not_attempted with
// reason cancelled (chunks no worker had end at once, without a queue
// message), accounts for every device exactly once and finishes as
// cancelled; cancelling again changes nothing, and another caller cannot.
func TestCancelStopsTheRun(t *testing.T) {
	stores(t, func(t *testing.T, newStore func() runs.Store) {
		f := newFixture(t, newStore(), 400, intunesim.Options{}, runs.Options{ChunkSize: 20, QueuedChunks: 2})
		s, _ := f.submitN(t, 120)
		m, ok := f.queue.pop()
		require.True(t, ok)
		require.NoError(t, f.svc.Work(context.Background(), m))

		_, err := f.svc.Cancel(context.Background(), s.RunID, "someone-else")
		require.ErrorIs(t, err, runs.ErrNotFound, "another caller's run is not found")
		st, err := f.svc.Cancel(context.Background(), s.RunID, "")
		require.NoError(t, err)
		assert.False(t, st.Done, "a chunk is still on the queue")
		assert.Contains(t, st.Summary.Warnings[len(st.Summary.Warnings)-1], "cancelled at")
		assert.Len(t, f.queue.peek(), 2, "the two chunks queued (RUN_QUEUED_CHUNKS) stay on the queue; the three no worker had ended at once, unqueued")

		f.drain(t, 10*time.Second)
		devs, first := f.allPages(t, s.RunID, false)
		require.True(t, first.Done)
		assert.Equal(t, remediate.StatusCancelled, first.Summary.Status)
		f.exactlyOnce(t, s, devs)
		reasons := map[string]int{}
		for _, d := range devs {
			reasons[string(d.Outcome)+"/"+d.Reason]++
		}
		assert.Equal(t, map[string]int{"succeeded/": 20, "not_attempted/cancelled": 100}, reasons)
		assert.Equal(t, 20, f.sim.Counters().Triggers)

		again, err := f.svc.Cancel(context.Background(), s.RunID, "")
		require.NoError(t, err)
		assert.Equal(t, first.Summary.Counts, again.Summary.Counts, "cancelling again changes nothing")
		assert.Equal(t, first.Summary.Warnings, again.Summary.Warnings, "the first cancel's time stands")
	})
}

// cancellingGraph cancels the run after its n-th trigger, as a caller
// would while a chunk is being worked.
type cancellingGraph struct {
	remediate.Graph
	n        int64
	triggers atomic.Int64
	once     sync.Once
	cancel   func()
}

func (g *cancellingGraph) Trigger(ctx context.Context, coll intune.Collection, id, script string) (intune.Response, error) {
	if g.triggers.Add(1) == g.n {
		g.once.Do(g.cancel)
	}
	return g.Graph.Trigger(ctx, coll, id, script)
}

// TestCancelStopsAChunkBeingWorked: a chunk being worked when its run is
// cancelled stops before its next slice: at most one slice of triggers
// goes out after the cancel.
func TestCancelStopsAChunkBeingWorked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 400, intunesim.Options{}, runs.Options{})
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	g := &cancellingGraph{Graph: f.client, n: 7}
	f.engine = remediate.New(g, pace.New(100_000, 100_000), remediate.Config{Concurrency: 1}, log)
	store := runs.NewMemoryStore()
	const slice = 5
	f.svc = runs.New(store, f.queue, f.engine, runs.Options{ChunkSize: 200, SliceSize: slice, RecordMargin: 20 * time.Millisecond}, log)
	s, _ := f.submitN(t, 100)
	g.cancel = func() {
		_, err := f.svc.Cancel(context.Background(), s.RunID, "")
		assert.NoError(t, err)
	}
	f.drain(t, 10*time.Second)
	devs, first := f.allPages(t, s.RunID, false)
	assert.Equal(t, remediate.StatusCancelled, first.Summary.Status)
	f.exactlyOnce(t, s, devs)
	sent := int(g.triggers.Load())
	assert.GreaterOrEqual(t, sent, 7)
	assert.LessOrEqual(t, sent, 2*slice, "the slice under way finishes, no other starts")
	assert.Equal(t, 100-sent, first.Summary.Counts.NotAttempted)
}
