package graph

import (
	"context"
	"errors"
	"net/url"
	"strings"

	abs "github.com/microsoft/kiota-abstractions-go"

	"github.com/remediator/remediator/internal/intune"
)

// TokenSource supplies bearer tokens; *credential.Source implements it.
// Token returns the token for the context's tenant and the generation of
// the credential behind it; Invalidate drops that credential after a 401.
type TokenSource interface {
	Token(ctx context.Context) (string, uint64, error)
	Invalidate(ctx context.Context, gen uint64)
}

// bearer is the kiota authentication provider: it adds a token only to
// requests for the scheme, host and port the client was built for, so a
// token never follows a link elsewhere, nor to the same host in clear
// text.
type bearer struct {
	tokens TokenSource
	origin string // scheme://host:port, lower case
}

// originOf is u's scheme, host and port (the scheme's default port when
// none is given), lower case.
func originOf(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Scheme + "://" + u.Hostname() + ":" + port)
}

// AuthenticateRequest implements authentication.AuthenticationProvider.
func (b bearer) AuthenticateRequest(ctx context.Context, ri *abs.RequestInformation, _ map[string]any) error {
	u, err := ri.GetUri()
	if err != nil {
		return err
	}
	if originOf(u) != b.origin {
		ri.Headers.Remove("Authorization")
		return nil
	}
	tok, gen, err := b.tokens.Token(ctx)
	if err != nil {
		return &tokenError{err}
	}
	if c, ok := ctx.Value(captureKey{}).(*capture); ok {
		c.gen = gen
	}
	ri.Headers.Remove("Authorization") // a retried request must not carry the old token too
	ri.Headers.Add("Authorization", "Bearer "+tok)
	return nil
}

// tokenError marks a failure to get a token: nothing was sent.
type tokenError struct{ err error }

// Error describes the failure to get a token.
func (e *tokenError) Error() string { return "no Graph token: " + e.err.Error() }

// Unwrap returns the credential's error.
func (e *tokenError) Unwrap() error { return e.err }

// withReauth runs call, and once more after a 401 with a freshly resolved
// credential (the secret may have rotated). A second 401 stands.
func (c *Client) withReauth(ctx context.Context, call func(ctx context.Context) (*capture, error)) error {
	capt, err := call(ctx)
	var ge *intune.Error
	if err == nil || c.tokens == nil || !errors.As(err, &ge) || ge.Status != 401 {
		return err
	}
	c.tokens.Invalidate(ctx, capt.gen)
	_, err = call(ctx)
	return err
}
