package azstore

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEntitySizeCountsAsAzureDoes(t *testing.T) {
	t.Parallel()
	// 4 + keys (2+2 characters) × 2 + "J0" (8 + 2×2) with "abc" (4 + 3×2)
	// + "B" (8 + 2) with 10 bytes (4 + 10) + "N" (8 + 2) an int64 (8).
	props := map[string]any{"J0": "abc", "B": aztables.EDMBinary(make([]byte, 10)), "N": int64(1)}
	assert.Equal(t, 4+8+(8+4+10)+(8+2+14)+(8+2+8), entitySize("pk", "rk", props))
	// Characters outside the BMP are two UTF-16 units; others one,
	// whatever their UTF-8 length.
	assert.Equal(t, 4+2*3, valueSize("a€b"))
	assert.Equal(t, 4+2*2, valueSize("😀"))
}

func TestEntitiesOverAzureLimitsAreRefusedHere(t *testing.T) {
	t.Parallel()
	// 18 properties of 30,000 ASCII characters: 540 KB of UTF-8, which the
	// emulator would take, but 1.08 MB as Azure counts (UTF-16): refused
	// before any request.
	props := map[string]any{}
	for i := range 18 {
		props[string(rune('a'+i))] = strings.Repeat("x", 30000)
	}
	_, err := checkEntity("pk", "rk", props)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "UTF-16")

	_, err = checkEntity("pk", "rk", map[string]any{"J0": strings.Repeat("😀", 17000)})
	assert.ErrorContains(t, err, "property J0", "34,000 UTF-16 units: over 64 KiB")
	_, err = checkEntity("pk", "rk", map[string]any{"B": aztables.EDMBinary(make([]byte, 64<<10+1))})
	assert.ErrorContains(t, err, "property B")
	many := map[string]any{}
	for i := range 253 {
		many["p"+strings.Repeat("x", i)] = true
	}
	_, err = checkEntity("pk", "rk", many)
	assert.ErrorContains(t, err, "253 properties")

	// A run's row as entity makes it: long JSON split within the limits.
	long := strings.Repeat("é", 100000)
	_, err = entity("pk", "rk", map[string]string{"v": long})
	assert.NoError(t, err)
	_, err = entity("pk", "rk", map[string]string{"v": strings.Repeat("x", 600000)})
	assert.Error(t, err, "a value over an entity's size is an error before the request, not the service's 400")
}

func TestSplitNeverCutsACharacter(t *testing.T) {
	t.Parallel()
	s := strings.Repeat("a€😀", 20000)
	parts := splitString(s, 30000)
	assert.Equal(t, s, strings.Join(parts, ""))
	for _, p := range parts {
		assert.True(t, utf8.ValidString(p))
		assert.LessOrEqual(t, len(p), 30000)
	}
}

// TestAnswersOfAnySizeFit: an answer of 4 MiB that does not compress
// (MAX_ANSWER_BYTES' default) goes into rows each within both limits, and
// the pieces join to it again.
func TestAnswersOfAnySizeFit(t *testing.T) {
	t.Parallel()
	raw := make([]byte, 3<<20)
	_, _ = rand.Read(raw)
	body, _ := json.Marshal(base64.StdEncoding.EncodeToString(raw)) // 4 MiB of JSON
	pieces, err := gzipPieces(body)
	require.NoError(t, err)
	row := keyRow{BodyPieces: len(pieces), BodyRows: len(pieces)}
	_, inHead, err := fill(keysPartition, keyOf("k"), row, 0, pieces)
	require.NoError(t, err)
	rows, got := 1, inHead
	for got < len(pieces) {
		e, n, err := fill(keysPartition, partKey(keyOf("k"), rows), keyRow{}, got, pieces)
		require.NoError(t, err)
		require.Positive(t, n)
		var ent aztables.EDMEntity
		require.NoError(t, json.Unmarshal(e, &ent))
		assert.LessOrEqual(t, entitySize(ent.PartitionKey, ent.RowKey, ent.Properties), maxEntityBytes)
		assert.LessOrEqual(t, len(e), maxEntityBytes)
		rows, got = rows+1, got+n
	}
	assert.GreaterOrEqual(t, rows, 4, "3 MiB that does not compress is several rows")
	assert.LessOrEqual(t, rows, 8)
}
