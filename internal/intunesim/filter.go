package intunesim

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// filterError is a $filter the service refuses; status is 400, or 500 for
// in (...) as Intune answers.
type filterError struct {
	status int
	msg    string
}

// Error returns the message.
func (e *filterError) Error() string { return e.msg }

type predicate func(*Device) bool

func matchAll(*Device) bool { return true }

// stringProps are the properties whose eq/ne filters Intune honours.
var stringProps = map[string]func(*Device) string{
	"id":                        func(d *Device) string { return d.ID },
	"operatingSystem":           func(d *Device) string { return d.OperatingSystem },
	"deviceName":                func(d *Device) string { return d.DeviceName },
	"azureADDeviceId":           func(d *Device) string { return d.AzureADDeviceID },
	"managedDeviceOwnerType":    func(d *Device) string { return d.OwnerType },
	"deviceCategoryDisplayName": func(*Device) string { return "Unknown Category" },
	"jailBroken":                func(*Device) string { return "Unknown" },
}

// timeProps are the properties whose gt/lt filters Intune honours.
var timeProps = map[string]func(*Device) time.Time{
	"lastSyncDateTime": func(d *Device) time.Time { return d.LastSyncDateTime },
	"enrolledDateTime": func(d *Device) time.Time { return d.LastSyncDateTime.AddDate(-1, 0, 0) },
}

// parseFilter compiles the subset of OData $filter that Intune honours.
// With quirks (real Intune) a clause on an unsupported property or operator
// matches everything, ne behaves as eq, only the first operand of or is
// applied, and in (...) is a 500. Without quirks those are evaluated or
// refused with 400.
func parseFilter(src string, quirks bool) (predicate, error) {
	if strings.TrimSpace(src) == "" {
		return matchAll, nil
	}
	toks, err := tokenize(src)
	if err != nil {
		return nil, err
	}
	p := &filterParser{toks: toks, quirks: quirks}
	pred, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, &filterError{http.StatusBadRequest, fmt.Sprintf("syntax error at '%s'", p.toks[p.pos])}
	}
	return pred, nil
}

type filterParser struct {
	toks   []string
	pos    int
	quirks bool
}

func (p *filterParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *filterParser) next() string { t := p.peek(); p.pos++; return t }

func (p *filterParser) expect(t string) error {
	if got := p.next(); got != t {
		return &filterError{http.StatusBadRequest, fmt.Sprintf("syntax error: expected '%s', found '%s'", t, got)}
	}
	return nil
}

func (p *filterParser) or() (predicate, error) {
	left, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peek() == "or" {
		p.next()
		right, err := p.and()
		if err != nil {
			return nil, err
		}
		if p.quirks {
			continue // Intune applies only the first operand of or.
		}
		l := left
		left = func(d *Device) bool { return l(d) || right(d) }
	}
	return left, nil
}

func (p *filterParser) and() (predicate, error) {
	left, err := p.clause()
	if err != nil {
		return nil, err
	}
	for p.peek() == "and" {
		p.next()
		right, err := p.clause()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(d *Device) bool { return l(d) && right(d) }
	}
	return left, nil
}

func (p *filterParser) unsupported(what string) (predicate, error) {
	if p.quirks {
		return matchAll, nil
	}
	return nil, &filterError{http.StatusBadRequest, what + " is not supported"}
}

func (p *filterParser) clause() (predicate, error) {
	t := p.next()
	switch t {
	case "(":
		inner, err := p.or()
		if err != nil {
			return nil, err
		}
		return inner, p.expect(")")
	case "contains", "startswith", "endswith":
		if err := p.expect("("); err != nil {
			return nil, err
		}
		prop := p.next()
		if err := p.expect(","); err != nil {
			return nil, err
		}
		val, err := literal(p.next())
		if err != nil {
			return nil, err
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		get, ok := stringProps[prop]
		if !ok || prop != "deviceName" || t == "endswith" {
			return p.unsupported(t + "(" + prop + ")")
		}
		val = strings.ToLower(val)
		if t == "contains" {
			return func(d *Device) bool { return strings.Contains(strings.ToLower(get(d)), val) }, nil
		}
		return func(d *Device) bool { return strings.HasPrefix(strings.ToLower(get(d)), val) }, nil
	case "", ")", ",", "and", "or":
		return nil, &filterError{http.StatusBadRequest, fmt.Sprintf("syntax error at '%s'", t)}
	}
	prop, op := t, p.next()
	if op == "in" {
		vals, err := p.list()
		if err != nil {
			return nil, err
		}
		if p.quirks {
			return nil, &filterError{http.StatusInternalServerError, "in is not supported"}
		}
		get, ok := stringProps[prop]
		if !ok {
			return p.unsupported(prop)
		}
		return func(d *Device) bool {
			for _, v := range vals {
				if strings.EqualFold(get(d), v) {
					return true
				}
			}
			return false
		}, nil
	}
	raw := p.next()
	switch op {
	case "eq", "ne":
		val, err := literal(raw)
		if err != nil {
			return nil, err
		}
		get, ok := stringProps[prop]
		if !ok {
			return p.unsupported(prop + " " + op)
		}
		want := op == "eq" || p.quirks // Intune treats ne as eq.
		return func(d *Device) bool { return strings.EqualFold(get(d), val) == want }, nil
	case "gt", "ge", "lt", "le":
		get, ok := timeProps[prop]
		if !ok {
			return p.unsupported(prop + " " + op)
		}
		at, err := time.Parse(time.RFC3339, strings.Trim(raw, "'"))
		if err != nil {
			return nil, &filterError{http.StatusBadRequest, fmt.Sprintf("'%s' is not a DateTimeOffset", raw)}
		}
		return func(d *Device) bool {
			v := get(d)
			switch op {
			case "gt":
				return v.After(at)
			case "ge":
				return !v.Before(at)
			case "lt":
				return v.Before(at)
			}
			return !v.After(at)
		}, nil
	}
	return nil, &filterError{http.StatusBadRequest, fmt.Sprintf("syntax error: unknown operator '%s'", op)}
}

func (p *filterParser) list() ([]string, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var vals []string
	for {
		v, err := literal(p.next())
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		switch p.next() {
		case ",":
		case ")":
			return vals, nil
		default:
			return nil, &filterError{http.StatusBadRequest, "syntax error in list"}
		}
	}
}

// literal decodes a quoted string (a doubled single quote escapes one) or
// a bare token.
func literal(t string) (string, error) {
	if t == "" || t == "(" || t == ")" || t == "," {
		return "", &filterError{http.StatusBadRequest, fmt.Sprintf("syntax error: expected a value, found '%s'", t)}
	}
	if strings.HasPrefix(t, "'") {
		return strings.ReplaceAll(t[1:len(t)-1], "''", "'"), nil
	}
	return t, nil
}

func tokenize(src string) ([]string, error) {
	var toks []string
	for i := 0; i < len(src); {
		c := src[i]
		switch c {
		case ' ', '\t':
			i++
		case '(', ')', ',':
			toks = append(toks, string(c))
			i++
		case '\'':
			j := i + 1
			for ; j < len(src); j++ {
				if src[j] == '\'' {
					if j+1 < len(src) && src[j+1] == '\'' {
						j++
						continue
					}
					break
				}
			}
			if j >= len(src) {
				return nil, &filterError{http.StatusBadRequest, "unterminated string literal"}
			}
			toks = append(toks, src[i:j+1])
			i = j + 1
		default:
			j := i
			for j < len(src) && !strings.ContainsRune(" \t(),'", rune(src[j])) {
				j++
			}
			toks = append(toks, src[i:j])
			i = j
		}
	}
	return toks, nil
}
