package config

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the README's settings table from Settings")

const (
	readme     = "../../docs/reference.md"
	tableBegin = "<!-- settings table: generated from internal/config by `make settings-doc` -->\n"
	tableEnd   = "<!-- end of settings table -->\n"
)

// TestREADMESettingsTable: the README's settings table is the one Markdown
// generates from Settings (`make settings-doc` rewrites it).
func TestREADMESettingsTable(t *testing.T) {
	raw, err := os.ReadFile(readme)
	require.NoError(t, err)
	doc := string(raw)
	begin := strings.Index(doc, tableBegin)
	end := strings.Index(doc, tableEnd)
	require.True(t, begin >= 0 && end > begin, "docs/reference.md has no generated settings table")
	current := doc[begin+len(tableBegin) : end]
	if *update {
		doc = doc[:begin+len(tableBegin)] + Markdown() + doc[end:]
		require.NoError(t, os.WriteFile(readme, []byte(doc), 0o644))
		return
	}
	assert.Equal(t, Markdown(), current, "the settings table of docs/reference.md differs from internal/config: run make settings-doc")
}

// TestEverySettingIsDocumentedOnce: names are unique and every setting has
// a meaning.
func TestEverySettingIsDocumentedOnce(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Settings {
		assert.False(t, seen[s.Name], "%s twice", s.Name)
		seen[s.Name] = true
		assert.NotEmpty(t, s.Meaning, s.Name)
	}
}
