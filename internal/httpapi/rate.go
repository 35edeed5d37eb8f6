package httpapi

import (
	"math"
	"sync"
	"time"
)

// callerRate holds each caller to a request rate (CALLER_RATE, requests a
// minute): a token bucket per caller, a burst of up to ten requests, so
// that one caller's loop spends its own allowance and not the tenant's
// shared Graph budget every other caller's runs need.
type callerRate struct {
	mu      sync.Mutex
	perSec  float64
	burst   float64
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets bounds the callers tracked; idle ones are forgotten first.
const maxBuckets = 10000

func newCallerRate(perMinute float64) *callerRate {
	if perMinute <= 0 {
		return nil
	}
	return &callerRate{perSec: perMinute / 60, burst: math.Max(1, math.Min(perMinute, 10)), buckets: map[string]*bucket{}}
}

// allow takes a token for caller, or says how long until one.
func (c *callerRate) allow(caller string, now time.Time) (bool, time.Duration) {
	if c == nil {
		return true, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.buckets[caller]
	if !ok {
		if len(c.buckets) >= maxBuckets {
			c.forgetIdle(now)
		}
		b = &bucket{tokens: c.burst, at: now}
		c.buckets[caller] = b
	}
	b.tokens = math.Min(c.burst, b.tokens+now.Sub(b.at).Seconds()*c.perSec)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / c.perSec * float64(time.Second))
}

// forgetIdle drops the buckets that have refilled (their callers are idle),
// or, when none has, the whole map: a flood of distinct callers never
// grows it past maxBuckets.
func (c *callerRate) forgetIdle(now time.Time) {
	for k, b := range c.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*c.perSec >= c.burst {
			delete(c.buckets, k)
		}
	}
	if len(c.buckets) >= maxBuckets {
		c.buckets = map[string]*bucket{}
	}
}
