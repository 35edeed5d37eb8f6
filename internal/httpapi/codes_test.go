package httpapi

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/alert"
	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/credential"
	"github.com/remediator/remediator/internal/remediate"
)

var update = flag.Bool("update", false, "rewrite the README's table of codes from the one table")

// TestEveryCodeHasItsStatus: every code the layers below can answer with
// is in the one table, so none becomes a 500 by omission; codes are unique.
func TestEveryCodeHasItsStatus(t *testing.T) {
	t.Parallel()
	for _, code := range []string{
		remediate.CodeInvalidRequest, remediate.CodeScriptNotAllowed, remediate.CodeScriptChanged, remediate.CodeScriptInvalid,
		remediate.CodeTargetResolutionFailed, remediate.CodeDeviceValidationFailed, remediate.CodeTooManyDevices,
		remediate.CodeConfirmationRequired, remediate.CodeFleetSizeUnknown, remediate.CodeGraphUnavailable,
		credential.CodeUnknownTenant, credential.CodeTokenUnavailable, credential.CodeKeyVaultUnavailable, credential.CodeBadCredential,
		alert.CodeInvalidAlert, alert.CodeNotActionable,
		app.CodeStorageUnavailable, app.CodeNotFound, app.CodeCredentialUnavailable, app.CodeAnswerTooLarge, app.CodeCallerNotAllowed,
	} {
		s := StatusOf(code)
		assert.True(t, s >= 400 && s < 500 || s == 503, "%s: a refusal is a 4xx, or a 503 to retry; got %d", code, s)
	}
	seen := map[string]bool{}
	for _, c := range codes {
		assert.False(t, seen[c.Code], "%s twice", c.Code)
		seen[c.Code] = true
	}
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
