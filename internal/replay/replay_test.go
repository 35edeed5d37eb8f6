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
