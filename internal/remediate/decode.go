package remediate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/remediator/remediator/internal/fault"
)

// schema says which JSON type each known field has; nested objects and
// arrays of objects have their own schema.
type schema map[string]fieldSpec

type fieldSpec struct {
	kind string // "string", "bool", "object", "array"
	sub  schema // for objects and the elements of arrays
}

var targetSchema = schema{"device_id": {kind: "string"}, "script_policy_id": {kind: "string"}}

var requestSchema = schema{
	"managed_devices":         {kind: "array", sub: targetSchema},
	"comanaged_devices":       {kind: "array", sub: targetSchema},
	"ignore_partial_failures": {kind: "bool"},
	"validate_device_exists":  {kind: "bool"},
	"timeouts":                {kind: "object", sub: schema{"invoke": {kind: "string"}}},
	"dry_run":                 {kind: "bool"},
	"tenant_id":               {kind: "string"},
	"confirm_device_count":    {kind: "integer"},
	"mode":                    {kind: "string"},
	"rollout": {kind: "object", sub: schema{
		"waves": {kind: "strings"},
		"gate": {kind: "object", sub: schema{
			"min_reported": {kind: "string"}, "min_success": {kind: "string"},
			"wait": {kind: "string"}, "poll": {kind: "string"},
		}},
	}},
	"targets": {kind: "array", sub: schema{
		"script_policy_id":   {kind: "string"},
		"filter":             {kind: "string"},
		"device_names":       {kind: "strings"},
		"group_ids":          {kind: "strings"},
		"exclude_device_ids": {kind: "strings"},
		"last_sync_within":   {kind: "string"},
		"on_duplicate_name":  {kind: "string"},
	}},
}

// Decode reads a request body. Unknown fields (typos), wrong types and
// keys repeated in one object are reported together, each with its path
// (the first MaxProblems of them, and their number). The body is checked
// as a stream of tokens, never built into a generic tree: a 1 MiB body of
// a hundred thousand objects costs its typed form, not ten times that.
func Decode(r io.Reader) (Request, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return Request{}, invalid([]fault.FieldError{{Message: "reading the body: " + err.Error()}})
	}
	if !json.Valid(raw) {
		var v any
		err := json.Unmarshal(raw, &v)
		if err == nil {
			err = fmt.Errorf("invalid JSON")
		}
		return Request{}, invalid([]fault.FieldError{{Message: "the body is not valid JSON: " + err.Error()}})
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return Request{}, invalid([]fault.FieldError{{Message: "the body must be a JSON object"}})
	}
	w := &walker{dec: json.NewDecoder(bytes.NewReader(raw))}
	w.dec.UseNumber()
	if err := w.value(fieldSpec{kind: "object", sub: requestSchema}, ""); err != nil {
		return Request{}, invalid([]fault.FieldError{{Message: "the body is not valid JSON: " + err.Error()}})
	}
	if w.problems.total > 0 {
		return Request{}, w.problems.err()
	}
	var req Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return Request{}, invalid([]fault.FieldError{{Message: err.Error()}})
	}
	return req, nil
}

// problems collects a request's problems: the first MaxProblems, and
// their number.
type problems struct {
	list  []fault.FieldError
	total int
}

func (p *problems) add(field, msg string) {
	p.total++
	if len(p.list) < MaxProblems {
		p.list = append(p.list, fault.FieldError{Field: field, Message: msg})
	}
}

func (p *problems) err() *fault.Error {
	return invalidOf(p.list, p.total)
}

// walker checks a JSON document against a schema, token by token.
type walker struct {
	dec      *json.Decoder
	problems problems
}

// value reads one value and checks it against spec; path names it.
func (w *walker) value(spec fieldSpec, path string) error {
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // null is the same as absent
	}
	bad := func() error {
		w.problems.add(path, "must be "+article(spec.kind))
		return w.skip(tok)
	}
	switch spec.kind {
	case "string":
		if _, ok := tok.(string); !ok {
			return bad()
		}
	case "bool":
		if _, ok := tok.(bool); !ok {
			return bad()
		}
	case "integer":
		n, ok := tok.(json.Number)
		if i, err := n.Int64(); !ok || err != nil || i < 0 {
			return bad()
		}
	case "strings":
		if tok != json.Delim('[') {
			return bad()
		}
		for i := 0; w.dec.More(); i++ {
			el, err := w.dec.Token()
			if err != nil {
				return err
			}
			if _, ok := el.(string); !ok {
				w.problems.add(fmt.Sprintf("%s[%d]", path, i), "must be a string")
				if err := w.skip(el); err != nil {
					return err
				}
			}
		}
		_, err = w.dec.Token()
		return err
	case "object":
		if tok != json.Delim('{') {
			return bad()
		}
		return w.object(spec.sub, path)
	case "array":
		if tok != json.Delim('[') {
			return bad()
		}
		for i := 0; w.dec.More(); i++ {
			p := fmt.Sprintf("%s[%d]", path, i)
			if err := w.value(fieldSpec{kind: "object", sub: spec.sub}, p); err != nil {
				return err
			}
		}
		_, err = w.dec.Token()
		return err
	}
	return nil
}

// object reads an object's members (after its '{') against s: unknown
// and repeated keys are problems.
func (w *walker) object(s schema, prefix string) error {
	seen := map[string]bool{}
	for w.dec.More() {
		kt, err := w.dec.Token()
		if err != nil {
			return err
		}
		k, _ := kt.(string)
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		spec, known := s[k]
		switch {
		case seen[k]:
			// {"dry_run":true, ..., "dry_run":false} means two things:
			// refuse it rather than let the last one win.
			w.problems.add(path, "appears more than once in the same object; send each field once")
			spec = fieldSpec{}
		case !known:
			w.problems.add(path, "unknown field"+suggest(k, s))
		}
		seen[k] = true
		if spec.kind == "" {
			if err := w.skipValue(); err != nil {
				return err
			}
			continue
		}
		if err := w.value(spec, path); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // '}'
	return err
}

// skipValue reads and drops the next value.
func (w *walker) skipValue() error {
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	return w.skip(tok)
}

// skip drops the rest of a value whose first token was tok.
func (w *walker) skip(tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		t, err := w.dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

func article(kind string) string {
	switch kind {
	case "array", "object":
		return "an " + kind
	case "bool":
		return "true or false"
	case "integer":
		return "a whole number of at least 0"
	case "strings":
		return "an array of strings"
	}
	return "a " + kind
}

// suggest names a known field that differs from k only by case or
// separators, the usual typo.
func suggest(k string, s schema) string {
	norm := func(x string) string { return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(x)) }
	for known := range s {
		if norm(known) == norm(k) {
			return fmt.Sprintf(" (did you mean %q?)", known)
		}
	}
	return ""
}
