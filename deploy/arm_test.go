package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// armEnv is what a deployment sees of Azure: the stand-ins of the
// functions whose values come from the platform.
type armEnv struct {
	// principal is the site's managed identity (reference(site, 'full')).
	principal string
	// existing is the site's app settings before the deployment
	// (list(.../config/appsettings)).
	existing map[string]any
}

// deployed is one resource as ARM would deploy it: every expression
// evaluated; Nested is true inside a nested deployment.
type deployed struct {
	Type, Name string
	DependsOn  []string
	Properties any
	Nested     bool
	Raw        map[string]any
}

// armEval evaluates ARM template expressions with the functions the
// project's templates use (Azure Resource Manager, "Template functions");
// any other function is an error, so a template change the tests cannot
// read fails rather than passes.
type armEval struct {
	t      testing.TB
	env    armEnv
	params map[string]any
	vars   map[string]any
}

// deploy evaluates tpl with the given parameter values (the others at
// their defaults) and returns the resources whose condition holds, nested
// deployments' resources included, and the outputs.
func deploy(t testing.TB, tpl map[string]any, params map[string]any, env armEnv) ([]deployed, map[string]any) {
	t.Helper()
	e := &armEval{t: t, env: env, params: map[string]any{}, vars: map[string]any{}}
	if v, ok := tpl["variables"].(map[string]any); ok {
		e.vars = v
	}
	declared, _ := tpl["parameters"].(map[string]any)
	for name, p := range declared {
		if v, ok := params[name]; ok {
			e.params[name] = v
			continue
		}
		def, ok := p.(map[string]any)["defaultValue"]
		require.True(t, ok, "parameter %s has no value and no default", name)
		e.params[name] = def // evaluated on use: defaults may name other parameters
	}
	for name := range params {
		require.Contains(t, declared, name, "the deployment sets parameter %s, which the template lacks", name)
	}
	var out []deployed
	resources, _ := tpl["resources"].([]any)
	for _, raw := range resources {
		r := raw.(map[string]any)
		name := e.value(r["name"]).(string)
		if c, ok := r["condition"]; ok && !e.value(c).(bool) {
			continue
		}
		d := deployed{Type: r["type"].(string), Name: name, Raw: r}
		for _, dep := range asSlice(r["dependsOn"]) {
			d.DependsOn = append(d.DependsOn, e.value(dep).(string))
		}
		if d.Type == "Microsoft.Resources/deployments" {
			props := r["properties"].(map[string]any)
			inner := map[string]any{}
			for k, v := range props["parameters"].(map[string]any) {
				inner[k] = e.value(v.(map[string]any)["value"])
			}
			nested, _ := deploy(t, props["template"].(map[string]any), inner, env)
			for _, n := range nested {
				n.Nested = true
				out = append(out, n)
			}
		} else {
			d.Properties = e.value(r["properties"])
		}
		out = append(out, d)
	}
	outputs := map[string]any{}
	for name, o := range asMap(tpl["outputs"]) {
		o := o.(map[string]any)
		if c, ok := o["condition"]; ok && !e.value(c).(bool) {
			continue
		}
		outputs[name] = e.value(o["value"])
	}
	return out, outputs
}

func asSlice(v any) []any        { s, _ := v.([]any); return s }
func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

// value evaluates every expression in v ("[...]" strings; "[[" is a
// literal "[").
func (e *armEval) value(v any) any {
	switch x := v.(type) {
	case string:
		if strings.HasPrefix(x, "[[") {
			return x[1:]
		}
		if strings.HasPrefix(x, "[") && strings.HasSuffix(x, "]") {
			p := &armParser{src: x[1 : len(x)-1]}
			node := p.expr()
			p.skip()
			require.Equal(e.t, len(p.src), p.pos, "unparsed rest of %s", x)
			return e.eval(node)
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i, el := range x {
			out[i] = e.value(el)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, el := range x {
			out[k] = e.value(el)
		}
		return out
	}
	return v
}

// armNode is a parsed expression: a literal, a call, or a member or index
// access on another node.
type armNode struct {
	lit    any
	call   string
	args   []*armNode
	on     *armNode
	member string
	index  *armNode
}

type armParser struct {
	src string
	pos int
}

func (p *armParser) skip() {
	for p.pos < len(p.src) && p.src[p.pos] == ' ' {
		p.pos++
	}
}

func (p *armParser) expr() *armNode {
	p.skip()
	var n *armNode
	switch c := p.src[p.pos]; {
	case c == '\'':
		var b strings.Builder
		for p.pos++; ; p.pos++ {
			if p.src[p.pos] == '\'' {
				if p.pos+1 < len(p.src) && p.src[p.pos+1] == '\'' {
					b.WriteByte('\'')
					p.pos++
					continue
				}
				p.pos++
				break
			}
			b.WriteByte(p.src[p.pos])
		}
		n = &armNode{lit: b.String()}
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		for p.pos++; p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '9'; p.pos++ {
		}
		i, _ := strconv.Atoi(p.src[start:p.pos])
		n = &armNode{lit: float64(i)}
	default:
		start := p.pos
		for p.pos < len(p.src) && (isIdent(p.src[p.pos])) {
			p.pos++
		}
		n = &armNode{call: p.src[start:p.pos]}
		p.skip()
		if p.src[p.pos] != '(' {
			panic("expected ( after " + n.call + " in " + p.src)
		}
		p.pos++
		for p.skip(); p.src[p.pos] != ')'; p.skip() {
			n.args = append(n.args, p.expr())
			p.skip()
			if p.src[p.pos] == ',' {
				p.pos++
			}
		}
		p.pos++
	}
	for {
		p.skip()
		switch {
		case p.pos < len(p.src) && p.src[p.pos] == '.':
			p.pos++
			start := p.pos
			for p.pos < len(p.src) && isIdent(p.src[p.pos]) {
				p.pos++
			}
			n = &armNode{on: n, member: p.src[start:p.pos]}
		case p.pos < len(p.src) && p.src[p.pos] == '[':
			p.pos++
			idx := p.expr()
			p.skip()
			p.pos++ // ]
			n = &armNode{on: n, index: idx}
		default:
			return n
		}
	}
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (e *armEval) eval(n *armNode) any {
	switch {
	case n.on != nil && n.index != nil:
		base, i := e.eval(n.on), e.eval(n.index)
		if s, ok := base.([]any); ok {
			return s[int(i.(float64))]
		}
		return asMap(base)[i.(string)]
	case n.on != nil:
		m := asMap(e.eval(n.on))
		require.NotNil(e.t, m, "member %s of a non-object", n.member)
		for k, v := range m { // ARM property names are case-insensitive
			if strings.EqualFold(k, n.member) {
				return v
			}
		}
		e.t.Fatalf("no member %s", n.member)
	case n.call == "":
		return n.lit
	case n.call == "if": // only the branch taken is evaluated, as ARM does
		if e.eval(n.args[0]).(bool) {
			return e.eval(n.args[1])
		}
		return e.eval(n.args[2])
	}
	args := make([]any, len(n.args))
	for i, a := range n.args {
		args[i] = e.eval(a)
	}
	return e.call(n.call, args)
}

func (e *armEval) call(fn string, a []any) any {
	str := func(i int) string { return a[i].(string) }
	switch strings.ToLower(fn) {
	case "parameters":
		v, ok := e.params[str(0)]
		require.True(e.t, ok, "undeclared parameter %s", str(0))
		return e.value(v)
	case "variables":
		v, ok := e.vars[str(0)]
		require.True(e.t, ok, "undeclared variable %s", str(0))
		return e.value(v)
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	case "not":
		return !a[0].(bool)
	case "and", "or":
		for _, x := range a {
			if x.(bool) == (fn == "or") {
				return x
			}
		}
		return fn == "and"
	case "equals":
		return reflect.DeepEqual(a[0], a[1])
	case "empty":
		return a[0] == nil || a[0] == "" || reflect.ValueOf(a[0]).Kind() != reflect.String && reflect.ValueOf(a[0]).Len() == 0
	case "string":
		if s, ok := a[0].(string); ok {
			return s
		}
		b, _ := json.Marshal(a[0])
		return string(b)
	case "tolower":
		return strings.ToLower(str(0))
	case "take":
		return str(0)[:min(len(str(0)), int(a[1].(float64)))]
	case "concat":
		if _, ok := a[0].([]any); ok {
			var out []any
			for _, x := range a {
				out = append(out, x.([]any)...)
			}
			return out
		}
		var b strings.Builder
		for _, x := range a {
			fmt.Fprint(&b, x)
		}
		return b.String()
	case "format":
		s := strings.NewReplacer("{{", "\x00", "}}", "\x01").Replace(str(0))
		for i, x := range a[1:] {
			s = strings.ReplaceAll(s, "{"+strconv.Itoa(i)+"}", fmt.Sprint(x))
		}
		return strings.NewReplacer("\x00", "{", "\x01", "}").Replace(s)
	case "createarray":
		return append([]any{}, a...)
	case "createobject":
		out := map[string]any{}
		for i := 0; i+1 < len(a); i += 2 {
			out[str(i)] = a[i+1]
		}
		return out
	case "union":
		out := map[string]any{}
		for _, x := range a {
			for k, v := range asMap(x) {
				out[k] = v
			}
		}
		return out
	case "uniquestring", "guid":
		h := sha256.Sum256([]byte(fmt.Sprint(a...)))
		if fn == "guid" {
			// Readable, so tests can see what a name is made of.
			parts := make([]string, len(a))
			for i, x := range a {
				parts[i] = fmt.Sprint(x)
			}
			return "guid(" + strings.Join(parts, "|") + ")"
		}
		return hex.EncodeToString(h[:])[:13]
	case "resourcegroup":
		return map[string]any{"id": "/subscriptions/sub/resourceGroups/rg", "location": "westeurope", "name": "rg"}
	case "subscription":
		return map[string]any{"id": "/subscriptions/sub", "subscriptionId": "sub", "tenantId": "tenant"}
	case "environment":
		return map[string]any{"suffixes": map[string]any{"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"},
			"authentication": map[string]any{"loginEndpoint": "https://login.microsoftonline.com/"}}
	case "resourceid", "subscriptionresourceid":
		types := strings.Split(str(0), "/")
		path := []string{types[0]}
		for i, name := range a[1:] {
			path = append(path, types[i+1], name.(string))
		}
		prefix := "/subscriptions/sub/resourceGroups/rg/providers/"
		if fn == "subscriptionResourceId" {
			prefix = "/subscriptions/sub/providers/"
		}
		return prefix + strings.Join(path, "/")
	case "reference":
		id := str(0)
		switch {
		case strings.Contains(id, "Microsoft.Web/sites/"):
			return map[string]any{"defaultHostName": id[strings.LastIndex(id, "/")+1:] + ".azurewebsites.net",
				"identity": map[string]any{"principalId": e.env.principal}}
		case strings.Contains(id, "Microsoft.Insights/components/"):
			return map[string]any{"ConnectionString": "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/"}
		case strings.Contains(id, "Microsoft.Storage/storageAccounts/"):
			return map[string]any{"primaryEndpoints": map[string]any{"blob": "https://" + id[strings.LastIndex(id, "/")+1:] + ".blob.core.windows.net/"}}
		}
		e.t.Fatalf("reference to %s is not emulated", id)
	case "list":
		require.Contains(e.t, str(0), "/config/appsettings", "list() of %s is not emulated", str(0))
		existing := map[string]any{}
		for k, v := range e.env.existing {
			existing[k] = v
		}
		return map[string]any{"properties": existing}
	case "listkeys":
		return map[string]any{"keys": []any{map[string]any{"value": "c3RvcmFnZS1rZXk="}}}
	}
	e.t.Fatalf("the ARM function %s is not emulated by these tests", fn)
	return nil
}
