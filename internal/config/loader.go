package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/intune"
)

// Setting is one environment variable: its name, its default as written
// in the environment ("" for none), what the README says of its default
// when that is not a plain value, its meaning, and how Load reads it.
type Setting struct {
	Name       string
	Default    string
	DefaultDoc string
	Meaning    string
	// read sets the value v (the default when unset) in l.c; nil for
	// settings read where they are used (secrets, the runtime's own).
	read func(l *loader, v string)
}

// loader is the state of one Load.
type loader struct {
	c      Config
	getenv func(string) string
	errs   []error
	// current is the setting being read: parsers report problems under it.
	current string
	// microsoft is true when Graph is Microsoft's (not a simulator).
	microsoft bool
	lambda    bool
}

func (l *loader) bad(name, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
}

// get reads a setting, refusing an unresolved Key Vault reference.
func (l *loader) get(name string) string {
	v := strings.TrimSpace(l.getenv(name))
	if strings.HasPrefix(v, "@Microsoft.KeyVault(") {
		l.bad(name, "is an unresolved Key Vault reference (%s); grant the app's identity access to the vault or fix the reference", v)
		return ""
	}
	return v
}

// Parsers for the table's common kinds.

func intIn(lo, hi int, set func(*Config, int)) func(*loader, string) {
	return func(l *loader, v string) {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			l.bad(l.current, "%q must be a whole number from %d to %d", v, lo, hi)
			return
		}
		set(&l.c, n)
	}
}

func duration(set func(*Config, time.Duration)) func(*loader, string) {
	return durationIn(time.Nanosecond, 0, set)
}

// durationIn reads a duration from lo to hi (no upper bound when hi is 0).
func durationIn(lo, hi time.Duration, set func(*Config, time.Duration)) func(*loader, string) {
	return func(l *loader, v string) {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil || d <= 0:
			l.bad(l.current, "%q must be a positive duration such as \"30s\"", v)
		case d < lo || hi > 0 && d > hi:
			l.bad(l.current, "%q must be from %s to %s", v, lo, hi)
		default:
			set(&l.c, d)
		}
	}
}

func text(set func(*Config, string)) func(*loader, string) {
	return func(l *loader, v string) { set(&l.c, v) }
}

// number reads a number above 0 and at most hi.
func number(hi float64, set func(*Config, float64)) func(*loader, string) {
	return func(l *loader, v string) {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > hi {
			l.bad(l.current, "%q must be a number above 0 and at most %g", v, hi)
			return
		}
		set(&l.c, f)
	}
}

// rate reads a pace per second, capped at Intune's limit against
// Microsoft Graph (a simulator may compress time).
func rate(limit float64, set func(*Config, float64)) func(*loader, string) {
	return func(l *loader, v string) {
		hi := limit
		if !l.microsoft {
			hi = 100000
		}
		number(hi, set)(l, v)
	}
}

// need reads a GUID required by the credential mode.
func need(set func(*Config, string)) func(*loader, string) {
	return func(l *loader, v string) {
		if l.c.GraphAuth != "client-secret" && l.c.GraphAuth != "keyvault" {
			return
		}
		if !intune.IsGUID(v) {
			l.bad(l.current, "%q must be a GUID; it is required with GRAPH_AUTH=%s", v, l.c.GraphAuth)
		}
		set(&l.c, v)
	}
}
