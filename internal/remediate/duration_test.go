package remediate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"168h": 168 * time.Hour, "30s": 30 * time.Second, "2h45m": 165 * time.Minute,
		"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "P7D": 7 * 24 * time.Hour, "PT2M": 2 * time.Minute,
		"P1DT12H": 36 * time.Hour, "pt100s": 100 * time.Second, "PT1.5S": 1500 * time.Millisecond, " 90s ": 90 * time.Second,
	} {
		got, ok := ParseDuration(in)
		assert.True(t, ok, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "P", "PT", "P1M", "P1Y", "7 days", "d", "-5s", "1d-5s", "P99999999999D", "99999999999d", "PT1H2D", "abc"} {
		_, ok := ParseDuration(in)
		assert.False(t, ok, "%q", in)
	}
}
