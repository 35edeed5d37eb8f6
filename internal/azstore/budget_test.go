package azstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azstore"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/testing/azurite"
)

// TestBudgetClaimsNeverOverlap: three stores (three processes' clients)
// claiming one budget's positions at once never take the same position,
// and together take a gapless run of them; another budget is apart.
func TestBudgetClaimsNeverOverlap(t *testing.T) {
	conn := azurite.Start(t)
	ctx := context.Background()
	var stores []*azstore.Store
	for range 3 {
		st, _, err := azstore.Open(ctx, azstore.Config{ConnectionString: conn, Table: "remediatorruns", Queue: "remediation-work"})
		require.NoError(t, err)
		stores = append(stores, st)
	}
	const key = "app|tenant-a|w"
	var mu sync.Mutex
	taken := map[int64]int{}
	var wg sync.WaitGroup
	for i, st := range stores {
		for range 4 {
			wg.Go(func() {
				for range 10 {
					c, err := st.Claim(ctx, pace.ClaimRequest{Key: key, From: 1000, Want: i + 1, Horizon: 1 << 40})
					if !assert.NoError(t, err) {
						return
					}
					first, got := c.First, c.Got
					mu.Lock()
					for p := first; p < first+int64(got); p++ {
						taken[p]++
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	total := 0
	for p, n := range taken {
		assert.Equal(t, 1, n, "position %d taken once", p)
		assert.GreaterOrEqual(t, p, int64(1000))
		total++
	}
	assert.Equal(t, int64(1000+total-1), maxKey(taken), "no gaps: a lost race retries")

	// Another tenant's budget starts from its own beginning.
	c, err := stores[0].Claim(ctx, pace.ClaimRequest{Key: "app|tenant-b|w", From: 5, Want: 3, Horizon: 100})
	require.NoError(t, err)
	assert.Equal(t, int64(5), c.First)
	assert.Equal(t, 3, c.Got)

	// Nothing beyond the horizon; positions left in the past are skipped.
	c, err = stores[0].Claim(ctx, pace.ClaimRequest{Key: "app|tenant-b|w", From: 0, Want: 3, Horizon: 4})
	require.NoError(t, err)
	assert.Zero(t, c.Got, "position 8 is beyond 0+4")
	c, err = stores[0].Claim(ctx, pace.ClaimRequest{Key: "app|tenant-b|w", From: 50, Want: 1, Horizon: 4})
	require.NoError(t, err)
	assert.Equal(t, int64(50), c.First)

	before := stores[1].Ops()
	_, err = stores[1].Claim(ctx, pace.ClaimRequest{Key: "app|tenant-c|w", From: 0, Want: 8, Horizon: 100})
	require.NoError(t, err)
	_, err = stores[1].Claim(ctx, pace.ClaimRequest{Key: "app|tenant-c|w", From: 0, Want: 8, Horizon: 100})
	require.NoError(t, err)
	assert.Equal(t, int64(4), stores[1].Ops()-before, "a read and a write a claim")
}

// TestBudgetRowKnowsTheStore: on Azurite, a claim reports the store's own
// clock, the processes that used the budget lately, and a 429 another
// process recorded; a row pushed far ahead is repaired; a process pacing
// at another rate is refused.
func TestBudgetRowKnowsTheStore(t *testing.T) {
	conn := azurite.Start(t)
	ctx := context.Background()
	st, _, err := azstore.Open(ctx, azstore.Config{ConnectionString: conn, Table: "remediatorruns", Queue: "remediation-work"})
	require.NoError(t, err)
	const key, spacing = "app|tenant-d|w", 125 * time.Millisecond
	now := time.Now().UnixNano() / int64(spacing)
	req := func(process string, from int64) pace.ClaimRequest {
		return pace.ClaimRequest{Key: key, Spacing: spacing, From: from, Want: 4, Horizon: 80, Process: process}
	}
	c, err := st.Claim(ctx, req("p1", now))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), c.StoreTime, 2*time.Second, "the Date of the store's answer")
	assert.Equal(t, 1, c.Processes)
	assert.Equal(t, 1.0, c.Factor)
	c, err = st.Claim(ctx, req("p2", now))
	require.NoError(t, err)
	assert.Equal(t, 2, c.Processes)

	// A claimer whose clock is an hour ahead is served from the store's
	// now, not from its future.
	c, err = st.Claim(ctx, req("p3", now+int64(time.Hour/spacing)))
	require.NoError(t, err)
	assert.Less(t, c.First, now+80, "served near the store's now")

	_, err = st.Claim(ctx, pace.ClaimRequest{Key: key, Spacing: 100 * time.Millisecond, From: now, Want: 1, Horizon: 80, Process: "p4"})
	assert.ErrorIs(t, err, pace.ErrRateMismatch)

	require.NoError(t, st.Throttled(ctx, key, time.Now().Add(time.Minute)))
	c, err = st.Claim(ctx, req("p1", now))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(time.Minute), c.PausedUntil, 3*time.Second, "every process learns the pause")
	assert.InDelta(t, 0.5, c.Factor, 0.02, "and the halved rate")
}
func maxKey(m map[int64]int) int64 {
	var best int64
	for k := range m {
		best = max(best, k)
	}
	return best
}
