package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/testing/funchost"
)

// TestRoutesAreTheFunctionsRoutes: every route of the API is served by
// the Azure function the route table names, as the host routes the app's
// function.json files, so the key of that function opens it; and the run
// status every starting function links to is under that same function.
func TestRoutesAreTheFunctionsRoutes(t *testing.T) {
	t.Parallel()
	app, err := funchost.Load("../..")
	require.NoError(t, err)
	starters := map[string]bool{}
	for _, rt := range Routes {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.ReplaceAll(path, "{id}", "0123456789abcdef01234567")
		f, _ := app.Match(method, path)
		require.NotNil(t, f, "%s: no function.json route serves it", rt.Pattern)
		assert.Equal(t, rt.Function, f.Name, rt.Pattern)
		assert.Equal(t, "function", f.AuthLevel, "%s: callers hold function keys", rt.Pattern)
		if method == "POST" && !strings.Contains(path, "/runs/") {
			starters[path] = true
		}
	}
	for start := range starters {
		status := start + "/runs/0123456789abcdef01234567"
		f, _ := app.Match("GET", status)
		g, _ := app.Match("POST", start)
		require.NotNil(t, f, "%s: runs it starts have no status route", start)
		assert.Equal(t, g.Name, f.Name, "%s: a run's status is under the function that started it", start)
		l := (&API{}).linksOf(httptest.NewRequest("POST", "https://app.example"+start, nil))
		body, _ := l.locations("0123456789abcdef01234567")
		assert.Equal(t, status, body)
	}
}
