package pace

import (
	"net/http"
	"testing"
	"time"
)

// FuzzRetryAfter: any header value gives a wait between zero and a day, or
// is reported unusable.
func FuzzRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"2", "2.128", "0", "-1", "1e400", "NaN", "", now.Add(time.Minute).Format(http.TimeFormat), "Fri, 31 Dec 9999 23:59:59 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := RetryAfter(v, now)
		if !ok && d != 0 {
			t.Fatalf("%q: unusable but %v", v, d)
		}
		if d < 0 {
			t.Fatalf("%q: negative wait %v", v, d)
		}
		if ok && d > 24*time.Hour && !looksLikeDate(v) {
			t.Fatalf("%q: a wait of %v", v, d)
		}
	})
}

func looksLikeDate(v string) bool {
	_, err := http.ParseTime(v)
	return err == nil
}
