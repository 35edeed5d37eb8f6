package remediate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
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

// Decode reads a request body. Unknown fields (typos) and wrong types are
// reported together, each with its path.
func Decode(r io.Reader) (Request, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return Request{}, invalid([]FieldError{{Message: "reading the body: " + err.Error()}})
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return Request{}, invalid([]FieldError{{Message: "the body is not valid JSON: " + err.Error()}})
	}
	if dec.More() {
		return Request{}, invalid([]FieldError{{Message: "the body holds more than one JSON value"}})
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return Request{}, invalid([]FieldError{{Message: "the body must be a JSON object"}})
	}
	if dups := duplicateKeys(raw); len(dups) > 0 {
		// {"dry_run":true, ..., "dry_run":false} means two things: refuse it
		// rather than let the last one win.
		return Request{}, invalid(dups)
	}
	var problems []FieldError
	checkObject(obj, requestSchema, "", &problems)
	if len(problems) > 0 {
		return Request{}, invalid(problems)
	}
	var req Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return Request{}, invalid([]FieldError{{Message: err.Error()}})
	}
	return req, nil
}

// maxDuplicates bounds the duplicate keys reported.
const maxDuplicates = 20

// duplicateKeys lists, by path, the keys that an object of the JSON
// document raw (already known to be valid) holds more than once.
func duplicateKeys(raw []byte) []FieldError {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out []FieldError
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := kt.(string)
				p := k
				if path != "" {
					p = path + "." + k
				}
				if seen[k] && len(out) < maxDuplicates {
					out = append(out, FieldError{p, "appears more than once in the same object; send each field once"})
				}
				seen[k] = true
				if err := walk(p); err != nil {
					return err
				}
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		default:
			return nil
		}
		_, err = dec.Token() // the closing delimiter
		return err
	}
	_ = walk("") // raw is valid JSON: an error here cannot happen
	return out
}

func checkObject(obj map[string]any, s schema, prefix string, problems *[]FieldError) {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		spec, ok := s[k]
		if !ok {
			*problems = append(*problems, FieldError{path, "unknown field" + suggest(k, s)})
			continue
		}
		checkValue(obj[k], spec, path, problems)
	}
}

func checkValue(v any, spec fieldSpec, path string, problems *[]FieldError) {
	if v == nil {
		return // null is the same as absent
	}
	bad := func() { *problems = append(*problems, FieldError{path, "must be " + article(spec.kind)}) }
	switch spec.kind {
	case "string":
		if _, ok := v.(string); !ok {
			bad()
		}
	case "bool":
		if _, ok := v.(bool); !ok {
			bad()
		}
	case "integer":
		n, ok := v.(json.Number)
		if i, err := n.Int64(); !ok || err != nil || i < 0 {
			bad()
		}
	case "strings":
		a, ok := v.([]any)
		if !ok {
			bad()
			return
		}
		for i, el := range a {
			if _, ok := el.(string); !ok {
				*problems = append(*problems, FieldError{fmt.Sprintf("%s[%d]", path, i), "must be a string"})
			}
		}
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			bad()
			return
		}
		checkObject(o, spec.sub, path, problems)
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad()
			return
		}
		for i, el := range a {
			p := fmt.Sprintf("%s[%d]", path, i)
			o, ok := el.(map[string]any)
			if !ok {
				*problems = append(*problems, FieldError{p, "must be an object"})
				continue
			}
			checkObject(o, spec.sub, p, problems)
		}
	}
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
