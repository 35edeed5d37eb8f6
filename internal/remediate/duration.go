package remediate

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// isoDuration is an ISO 8601 duration of days, hours, minutes and seconds
// (P7D, PT2M, P1DT12H, PT1.5S): what Logic Apps and Power Automate
// expressions write and what makers type in the designer.
var isoDuration = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`)

// maxDuration bounds every duration a request gives (about 10 years), so
// no sum or conversion overflows.
const maxDuration = 10 * 365 * 24 * time.Hour

// ParseDuration reads a duration a caller typed: Go's form ("168h",
// "2h45m", "30s"), with whole days allowed ("7d", "1d12h"), or ISO 8601
// ("P7D", "PT2M", "P1DT12H"). Months and years are refused: their length
// varies.
func ParseDuration(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if m := isoDuration.FindStringSubmatch(strings.ToUpper(s)); m != nil && s != "P" && !strings.HasSuffix(strings.ToUpper(s), "T") {
		var d time.Duration
		for i, unit := range []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second} {
			if m[i+1] == "" {
				continue
			}
			f, err := strconv.ParseFloat(m[i+1], 64)
			if err != nil || f*float64(unit) > float64(maxDuration) {
				return 0, false
			}
			d += time.Duration(f * float64(unit))
		}
		return d, d <= maxDuration
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 || n > int(maxDuration/(24*time.Hour)) {
			return 0, false
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, true
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || days+d > maxDuration {
		return 0, false
	}
	return days + d, true
}
