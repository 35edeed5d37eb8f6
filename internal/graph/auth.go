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
// the credential behind it (carried by a failure as intune.Error's
// Credential).
type TokenSource interface {
	Token(ctx context.Context) (string, uint64, error)
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

// once runs call, stamping its failure with the generation of the
// credential whose token it sent: a 401 is retried by the engine's one
// retry loop (remediate.RetryPolicy), which drops that credential first.
func (c *Client) once(ctx context.Context, call func(ctx context.Context) (*capture, error)) error {
	capt, err := call(ctx)
	var ge *intune.Error
	if err != nil && capt != nil && errors.As(err, &ge) {
		ge.Credential = capt.gen
	}
	return err
}
