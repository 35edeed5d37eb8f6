package pace

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2", 2 * time.Second, true},
		{"2.128", 2128 * time.Millisecond, true},
		{"0", 0, true},
		{" 5 ", 5 * time.Second, true},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"soon", 0, false},
		{"NaN", 0, false},
		{"1e400", 0, false},
	}
	for _, tc := range tests {
		got, ok := RetryAfter(tc.in, now)
		assert.Equal(t, tc.ok, ok, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	for attempt := 1; attempt <= 40; attempt++ {
		want := min(time.Second<<min(attempt-1, 20), 60*time.Second)
		for range 50 {
			d := Backoff(attempt, time.Second, 60*time.Second)
			assert.GreaterOrEqual(t, d, want/2)
			assert.LessOrEqual(t, d, want)
		}
	}
	assert.Zero(t, Backoff(3, 0, 0))
}

func TestSleepHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		start := time.Now()
		assert.ErrorIs(t, Sleep(ctx, time.Hour), context.Canceled)
		assert.Equal(t, time.Second, time.Since(start))

		dl, cancel2 := context.WithTimeout(context.Background(), time.Minute)
		defer cancel2()
		start = time.Now()
		assert.ErrorIs(t, Sleep(dl, time.Hour), context.DeadlineExceeded, "a wait past the deadline fails at once")
		assert.Zero(t, time.Since(start))
		assert.NoError(t, Sleep(dl, time.Second))
	})
}

// TestWritePaceNeverExceedsTheWindow checks the promise behind the default
// burst of one: no interval of length T holds more than 1 + rate×T writes.
func TestWritePaceNeverExceedsTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(10, 100)
		var times []time.Time
		for range 300 {
			_, err := p.Write(context.Background())
			require.NoError(t, err)
			times = append(times, time.Now())
		}
		const window = 20 * time.Second
		for i := range times {
			n := 0
			for _, u := range times[i:] {
				if u.Sub(times[i]) < window {
					n++
				}
			}
			assert.LessOrEqual(t, n, 201, "Intune allows 200 per 20 s")
		}
		assert.InDelta(t, 29.9, times[299].Sub(times[0]).Seconds(), 0.2)
	})
}

func TestPauseHoldsEveryCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1000, 1000)
		p.Pause(3 * time.Second)
		p.Pause(time.Second) // never shortens
		start := time.Now()
		done := make(chan time.Duration, 4)
		for range 4 {
			go func() {
				_, _ = p.Write(context.Background())
				done <- time.Since(start)
			}()
		}
		for range 4 {
			assert.GreaterOrEqual(t, <-done, 3*time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Pause(10 * time.Second)
		_, err := p.Read(ctx, 20)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "a pause longer than the caller's time fails at once")
	})
}

// TestPauseHoldsCallersAlreadyWaitingForASlot: a 429 that arrives while a
// caller waits for its pace slot holds that caller until the pause ends.
func TestPauseHoldsCallersAlreadyWaitingForASlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 100)
		_, err := p.Write(context.Background()) // takes the only token
		require.NoError(t, err)
		start := time.Now()
		done := make(chan time.Duration, 1)
		go func() {
			_, _ = p.Write(context.Background()) // waits a second for its slot
			done <- time.Since(start)
		}()
		time.Sleep(500 * time.Millisecond)
		p.Pause(5 * time.Second) // a 429 while it waits
		assert.GreaterOrEqual(t, <-done, 5500*time.Millisecond, "no write before the pause ends")
		assert.Zero(t, p.PausedFor())
	})
}

// TestTenantsHaveTheirOwnBudgets: one tenant's pace and 429 pause never
// hold another tenant.
func TestTenantsHaveTheirOwnBudgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 100)
		a, b := p.For("tenant-a"), p.For("TENANT-B")
		assert.Same(t, a, p.For("TENANT-A"), "one budget per tenant")
		assert.Same(t, p, p.For(""), "the default tenant is the root")
		a.Pause(time.Hour)
		start := time.Now()
		for range 3 {
			_, err := b.Write(context.Background())
			require.NoError(t, err)
		}
		assert.Equal(t, 2*time.Second, time.Since(start), "B keeps its own pace while A is paused")
		assert.Zero(t, b.PausedFor())
		assert.Equal(t, time.Hour-2*time.Second, a.PausedFor())
	})
}
