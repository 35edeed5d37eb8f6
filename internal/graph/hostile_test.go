package graph

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
)

// staticTokens hands out one token.
type staticTokens struct{}

func (staticTokens) Token(context.Context) (string, uint64, error) {
	return "secret-graph-token", 1, nil
}
func (staticTokens) Invalidate(context.Context, uint64) {}

// TestRedirectsAreNeverFollowed: a trigger answered 307 to another host is
// a failure with its status, and the other host receives nothing (kiota
// would otherwise count the 3xx, or the redirect's 204, as accepted).
func TestRedirectsAreNeverFollowed(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(other.Close)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path+"?sig=token-in-the-url", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(hostile.Close)
	c, err := New(Config{BaseURL: hostile.URL + "/beta", Tokens: staticTokens{}, CallTimeout: 2 * time.Second})
	require.NoError(t, err)

	_, err = c.Trigger(context.Background(), intune.ManagedDevices, "12345678-1234-1234-1234-123456789abc", "87654321-4321-4321-4321-ba9876543210")
	var ge *intune.Error
	require.True(t, errors.As(err, &ge), "%v", err)
	assert.Equal(t, 307, ge.Status)
	assert.False(t, ge.Transport)
	assert.Contains(t, ge.Message, "never followed")
	assert.NotContains(t, ge.Message, "token-in-the-url", "only the host of the location is told")
	_, err = c.Script(context.Background(), "87654321-4321-4321-4321-ba9876543210")
	require.True(t, errors.As(err, &ge))
	assert.Equal(t, 307, ge.Status, "reads are not followed either")
	assert.Zero(t, elsewhere.Load(), "nothing reached the other host")
}

// TestTokensGoOnlyToTheConfiguredOrigin: the bearer token is added only
// for Graph's own scheme, host and port: not to plain http on the same
// host and port (a nextLink downgraded to http), nor to another port.
func TestTokensGoOnlyToTheConfiguredOrigin(t *testing.T) {
	t.Parallel()
	base, _ := url.Parse("https://graph.example:443/beta")
	b := bearer{tokens: staticTokens{}, origin: originOf(base)}
	for target, want := range map[string]bool{
		"https://graph.example/beta/x":        true,
		"https://GRAPH.example:443/beta/x":    true,
		"http://graph.example:443/beta/x":     false,
		"http://graph.example/beta/x":         false,
		"https://graph.example:8443/beta/x":   false,
		"https://graph.example.evil/beta/x":   false,
		"https://evil.example/graph.example/": false,
	} {
		u, _ := url.Parse(target)
		ri := abs.NewRequestInformation()
		ri.SetUri(*u)
		ri.Headers.Add("Authorization", "Bearer stale")
		require.NoError(t, b.AuthenticateRequest(context.Background(), ri, nil))
		got := ri.Headers.Get("Authorization")
		if want {
			assert.Equal(t, []string{"Bearer secret-graph-token"}, got, target)
		} else {
			assert.Empty(t, got, "%s gets no token", target)
		}
	}
}

// TestAnswersAreReadWithALimit: a device list larger than the limit, or a
// small gzip that inflates past it, fails the call with a clear error and
// is never read whole; an answer of exactly the limit is read.
func TestAnswersAreReadWithALimit(t *testing.T) {
	t.Parallel()
	const limit = 1 << 20
	page := func(size int) []byte {
		head, tail := `{"value":[],"pad":"`, `"}`
		return []byte(head + strings.Repeat("x", size-len(head)-len(tail)) + tail)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(page(8 << 20))
	_ = zw.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Query().Get("$filter") {
		case "big":
			_, _ = w.Write(page(8 * limit))
		case "bomb":
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gz.Bytes())
		default:
			_, _ = w.Write(page(limit))
		}
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL + "/beta", CallTimeout: 5 * time.Second, MaxResponseBytes: limit})
	require.NoError(t, err)
	require.Less(t, gz.Len(), limit, "the bomb itself is small")
	for _, filter := range []string{"big", "bomb"} {
		_, err := c.ListDevices(context.Background(), filter, 10, "")
		require.Error(t, err, filter)
		assert.Contains(t, err.Error(), "larger than 1048576 bytes", filter)
	}
	_, err = c.ListDevices(context.Background(), "exact", 10, "")
	assert.NoError(t, err, "an answer of exactly the limit is read")
}
