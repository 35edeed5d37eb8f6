package remediate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/remediator/remediator/internal/intune"
)

// TestRetryPolicy is the one table of what every Graph call retries: 429
// always (for as long as the run may), lost answers and 503/504 for every
// call, other 5xx only for reads, since a write that failed with 500 is
// not sent twice.
func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	var p RetryPolicy
	p.defaults()
	for _, tc := range []struct {
		err          intune.Error
		read, writes retryClass
	}{
		{intune.Error{Status: 429}, throttled, throttled},
		{intune.Error{Transport: true}, transient, transient},
		{intune.Error{Status: 503}, transient, transient},
		{intune.Error{Status: 504}, transient, transient},
		{intune.Error{Status: 500}, transient, final},
		{intune.Error{Status: 502}, transient, final},
		{intune.Error{Status: 400}, final, final},
		{intune.Error{Status: 403}, final, final},
		{intune.Error{Status: 404}, final, final},
	} {
		assert.Equal(t, tc.read, p.CheckRetry(read, &tc.err), "read, %+v", tc.err)
		assert.Equal(t, tc.writes, p.CheckRetry(write, &tc.err), "write, %+v", tc.err)
	}

	// The wait is Graph's Retry-After when it sends one, else capped
	// exponential backoff with jitter.
	assert.Equal(t, 2128*time.Millisecond, p.Backoff(&intune.Error{Status: 429, RetryAfter: "2.128"}, 1))
	// Retry-After is honoured up to MaxRetryAfter (5 min): a day, or a
	// date in year 9999, is taken as the cap and reported as capped.
	for _, ra := range []string{"86400", "Fri, 31 Dec 9999 23:59:59 GMT"} {
		d, capped := p.wait(&intune.Error{Status: 429, RetryAfter: ra}, 1)
		assert.Equal(t, 5*time.Minute, d, ra)
		assert.True(t, capped, ra)
	}
	for n := 1; n <= 8; n++ {
		d := p.Backoff(&intune.Error{Status: 503}, n)
		ceiling := min(p.BackoffBase<<(n-1), p.BackoffMax)
		assert.GreaterOrEqual(t, d, ceiling/2, "retry %d", n)
		assert.LessOrEqual(t, d, ceiling, "retry %d", n)
	}
}
