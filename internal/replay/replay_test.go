package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMemoryIsBoundedInBytes: however many large answers are kept, the
// store holds at most its budget, evicting the oldest first; the newest
// answers replay.
func TestMemoryIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	m := NewMemoryBounded(1 << 20)
	ctx := context.Background()
	big := json.RawMessage(`"` + strings.Repeat("x", 200<<10) + `"`)
	for i := range 20 {
		key := fmt.Sprintf("k%d", i)
		prev, err := m.Begin(ctx, key, time.Hour)
		require.NoError(t, err)
		require.Nil(t, prev)
		require.NoError(t, m.Finish(ctx, key, Stored{Status: 200, Body: big}))
		assert.LessOrEqual(t, m.Bytes(), int64(1<<20), "after %d answers", i+1)
	}
	kept := m.Kept()
	assert.Equal(t, 5, len(kept), "five answers of 200 KiB fit in 1 MiB")
	_, newest := kept["k19"]
	_, oldest := kept["k0"]
	assert.True(t, newest, "the newest is kept")
	assert.False(t, oldest, "the oldest went first")

	_, err := m.Begin(ctx, "huge", time.Hour)
	require.NoError(t, err)
	require.NoError(t, m.Finish(ctx, "huge", Stored{Status: 200, Body: json.RawMessage(`"` + strings.Repeat("x", 2<<20) + `"`)}))
	_, huge := m.Kept()["huge"]
	assert.False(t, huge, "an answer over the whole budget is not kept")
	prev, err := m.Begin(ctx, "huge", time.Hour)
	assert.NoError(t, err)
	assert.Nil(t, prev, "and its key is free again")
}

// TestOneCallersFloodEvictsOnlyItsOwn: caller A keeping 10,000 answers
// within a budget that holds a fraction of them evicts A's oldest, never
// B's answer.
func TestOneCallersFloodEvictsOnlyItsOwn(t *testing.T) {
	t.Parallel()
	m := NewMemoryBounded(256 << 10)
	ctx := context.Background()
	keep := func(owner, key string) {
		k := Key("remediate", owner, key)
		_, err := m.Begin(ctx, k, time.Hour)
		require.NoError(t, err)
		require.NoError(t, m.Finish(ctx, k, Stored{Status: 200, Body: json.RawMessage(`{"run_id":"` + key + `","devices":[` + strings.Repeat(`{"outcome":"succeeded"},`, 10) + `{}]}`)}))
	}
	keep("key:bbbbbbbbbbbb", "change-4711")
	for i := range 10000 {
		keep("key:aaaaaaaaaaaa", fmt.Sprintf("flood-%d", i))
		require.LessOrEqual(t, m.Bytes(), int64(256<<10))
	}
	kept := m.Kept()
	_, victim := kept[Key("remediate", "key:bbbbbbbbbbbb", "change-4711")]
	assert.True(t, victim, "B's answer survives A's flood")
	_, newest := kept[Key("remediate", "key:aaaaaaaaaaaa", "flood-9999")]
	_, oldest := kept[Key("remediate", "key:aaaaaaaaaaaa", "flood-0")]
	assert.True(t, newest)
	assert.False(t, oldest, "A's own oldest went")
	assert.Less(t, len(kept), 10001)

	// Owners are told apart even when a key holds the separators.
	assert.Equal(t, `a":b`, ownerOf(Key("alert", `a":b`, `x:"y"`)))
	assert.Empty(t, ownerOf("plain"))
}
