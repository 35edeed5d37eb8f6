package azstore_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azstore"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/testing/azurite"
)

// TestBudgetLeasesOnAzurite: on Azurite, a renewal writes this process's
// lease row and reads every lease of the budget, stamped by the table's
// clock, in two storage operations; processes renewing at once never
// lose each other's leases (each writes its own row); another budget is
// apart; a release marks the lease idle; a 429 recorded by one process
// reaches the others with the halved rate.
func TestBudgetLeasesOnAzurite(t *testing.T) {
	conn := azurite.Start(t)
	ctx := context.Background()
	var stores []*azstore.Store
	for range 3 {
		st, _, err := azstore.Open(ctx, azstore.Config{ConnectionString: conn, Table: "remediatorruns", Queue: "remediation-work"})
		require.NoError(t, err)
		stores = append(stores, st)
	}
	const key = "app|tenant-a|w"
	lease := func(p string, share float64) pace.Lease {
		return pace.Lease{Process: p, Rate: 10, Share: share, Demand: 10, Term: 6 * time.Second}
	}
	var wg sync.WaitGroup
	for i, st := range stores {
		wg.Go(func() {
			for n := range 10 {
				_, err := st.Renew(ctx, key, lease(string(rune('a'+i)), float64(n)))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()

	before := stores[0].Ops()
	start := time.Now()
	got, err := stores[0].Renew(ctx, key, lease("a", 3))
	require.NoError(t, err)
	assert.Equal(t, int64(2), stores[0].Ops()-before, "an upsert and a query")
	assert.WithinDuration(t, start, got.Now, 2*time.Second, "the Date of the table's answer")
	assert.Equal(t, 1.0, got.Factor)
	assert.True(t, got.PausedUntil.IsZero())
	require.Len(t, got.All, 3, "every process's lease, none lost to another's write")
	for _, l := range got.All {
		assert.WithinDuration(t, start, l.Written, 3*time.Second, "%s stamped by the table", l.Process)
		assert.Equal(t, 6*time.Second, l.Term)
		if l.Process == "a" {
			assert.Equal(t, 3.0, l.Share)
		} else {
			assert.Equal(t, 9.0, l.Share, "%s's last lease", l.Process)
		}
	}

	other, err := stores[1].Renew(ctx, "app|tenant-b|w", lease("b", 1))
	require.NoError(t, err)
	assert.Len(t, other.All, 1, "another tenant's budget is apart")

	require.NoError(t, stores[1].Release(ctx, key, lease("b", 9)))
	require.NoError(t, stores[2].Throttled(ctx, key, time.Minute))
	got, err = stores[0].Renew(ctx, key, lease("a", 3))
	require.NoError(t, err)
	for _, l := range got.All {
		if l.Process == "b" {
			assert.True(t, l.Idle)
			assert.Zero(t, l.Share, "a released lease holds nothing")
		}
	}
	assert.WithinDuration(t, time.Now().Add(time.Minute), got.PausedUntil, 3*time.Second, "every process learns the pause")
	assert.InDelta(t, 0.5, got.Factor, 0.02, "and the halved rate")

	_, err = stores[0].Renew(ctx, "app|tenant'|w", lease("a", 1))
	assert.Error(t, err, "a key that would break the table's filter is refused")

	// The former design's timeline row is deleted where a renewal finds it.
	svc, err := aztables.NewServiceClientFromConnectionString(conn, nil)
	require.NoError(t, err)
	table := svc.NewClient("remediatorruns")
	former, err := json.Marshal(map[string]any{"PartitionKey": "budget|" + key, "RowKey": "next", "J0": `{"n":5}`})
	require.NoError(t, err)
	_, err = table.AddEntity(ctx, former, nil)
	require.NoError(t, err)
	_, err = stores[0].Renew(ctx, key, lease("a", 3))
	require.NoError(t, err)
	_, err = table.GetEntity(ctx, "budget|"+key, "next", nil)
	assert.Error(t, err, "the timeline row is gone")
}
