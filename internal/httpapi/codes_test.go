package httpapi

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/fault"
)

var update = flag.Bool("update", false, "rewrite the README's table of codes from the one table")

// TestEveryCodeHasItsStatus: every code of the vocabulary (fault.All) has
// its row in the one table, so none becomes a 500 by omission; a refusal
// is a 4xx, or a 503 to retry, save the fault of remediator's own; the
// table has no code twice, and none outside the vocabulary.
func TestEveryCodeHasItsStatus(t *testing.T) {
	t.Parallel()
	rows := map[fault.Code]int{}
	for _, c := range codes {
		assert.NotContains(t, rows, c.Code, "%s twice", c.Code)
		rows[c.Code] = c.Status
	}
	for _, code := range fault.All() {
		s, ok := rows[code]
		assert.True(t, ok, "%s has no row in the status table", code)
		if code != fault.Internal {
			assert.True(t, s >= 400 && s < 500 || s == 503, "%s: a refusal is a 4xx, or a 503 to retry; got %d", code, s)
		}
	}
	assert.Len(t, rows, len(fault.All()), "every row's code is in fault.All")
	assert.Equal(t, 500, StatusOf("no-such-code"))
}

const (
	codesBegin = "<!-- status table: generated from internal/httpapi by `make settings-doc` -->\n"
	codesEnd   = "<!-- end of status table -->\n"
)

// TestREADMEStatusTable: the README's table of statuses is the one table.
func TestREADMEStatusTable(t *testing.T) {
	raw, err := os.ReadFile("../../docs/reference.md")
	require.NoError(t, err)
	doc := string(raw)
	begin, end := strings.Index(doc, codesBegin), strings.Index(doc, codesEnd)
	require.True(t, begin >= 0 && end > begin, "docs/reference.md has no generated status table")
	if *update {
		doc = doc[:begin+len(codesBegin)] + CodesMarkdown() + doc[end:]
		require.NoError(t, os.WriteFile("../../docs/reference.md", []byte(doc), 0o644))
		return
	}
	assert.Equal(t, CodesMarkdown(), doc[begin+len(codesBegin):end], "run make settings-doc")
}
