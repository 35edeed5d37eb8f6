package azstore_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azstore"
	"github.com/remediator/remediator/internal/azurite"
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
					first, got, err := st.Claim(ctx, key, 1000, i+1, 1<<40)
					if !assert.NoError(t, err) {
						return
					}
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
	first, got, err := stores[0].Claim(ctx, "app|tenant-b|w", 5, 3, 100)
	require.NoError(t, err)
	assert.Equal(t, int64(5), first)
	assert.Equal(t, 3, got)

	// Nothing beyond the horizon; positions left in the past are skipped.
	_, got, err = stores[0].Claim(ctx, "app|tenant-b|w", 0, 3, 4)
	require.NoError(t, err)
	assert.Zero(t, got, "position 8 is beyond 0+4")
	first, _, err = stores[0].Claim(ctx, "app|tenant-b|w", 50, 1, 4)
	require.NoError(t, err)
	assert.Equal(t, int64(50), first)

	before := stores[1].Ops()
	_, _, err = stores[1].Claim(ctx, "app|tenant-c|w", 0, 8, 100)
	require.NoError(t, err)
	_, _, err = stores[1].Claim(ctx, "app|tenant-c|w", 0, 8, 100)
	require.NoError(t, err)
	assert.Equal(t, int64(4), stores[1].Ops()-before, "a read and a write a claim")
}

func maxKey(m map[int64]int) int64 {
	var best int64
	for k := range m {
		best = max(best, k)
	}
	return best
}
