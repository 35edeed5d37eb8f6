package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/remediate"
)

// The rules `paconn validate` and the Power Platform Swagger Validator apply
// that can be written down (microsoft/powerplatform-developerhub,
// certification-swagger-validator-rules.md and define-openapi-definition.md).
var (
	operationIDPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)
	// Operation summaries: words only, no punctuation, no product names
	// (the certification checklist); x-ms-summary in Title Case.
	summaryPattern = regexp.MustCompile(`^[A-Za-z0-9 ]+$`)
	productNames   = regexp.MustCompile(`(?i)\b(intune|azure|microsoft|graph|entra|windows|monitor|power automate|logic apps?|remediator)\b`)
	smallWords     = map[string]bool{"a": true, "an": true, "the": true, "of": true, "for": true, "to": true, "in": true, "on": true, "and": true, "or": true, "by": true, "at": true, "with": true, "per": true}
	categories     = []string{"AI", "Business Management", "Business Intelligence", "Collaboration", "Commerce", "Communication", "Content and Files",
		"Finance", "Data", "Human Resources", "Internet of Things", "IT Operations", "Lifestyle and Entertainment", "Marketing", "Productivity",
		"Sales and CRM", "Security", "Social Media", "Website"}
	visibilities    = []string{"important", "advanced", "internal"}
	unsupported     = []string{`"uniqueItems"`, `"oneOf"`, `"anyOf"`, `"not"`, `"collectionFormat": "multi"`}
	durationExample = regexp.MustCompile(`\b(P[0-9DTHMS.]+|\d+[dhms][0-9dhms]*)\b`)
)

type swagger struct {
	Swagger             string                    `json:"swagger"`
	Host                string                    `json:"host"`
	BasePath            string                    `json:"basePath"`
	SecurityDefinitions map[string]map[string]any `json:"securityDefinitions"`
	Security            []map[string][]string     `json:"security"`
	Paths               map[string]map[string]operation
	Definitions         map[string]map[string]any `json:"definitions"`
}

type operation struct {
	OperationID string           `json:"operationId"`
	Summary     string           `json:"summary"`
	Description string           `json:"description"`
	Visibility  string           `json:"x-ms-visibility"`
	Consumes    []string         `json:"consumes"`
	Pageable    map[string]any   `json:"x-ms-pageable"`
	Parameters  []map[string]any `json:"parameters"`
	Responses   map[string]map[string]any
}

func readSwagger(t *testing.T) (swagger, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "connector/apiDefinition.swagger.json"))
	require.NoError(t, err)
	var doc swagger
	require.NoError(t, json.Unmarshal(raw, &doc))
	return doc, raw
}

// TestConnectorIsOpenAPI: the connector's definition is openapi.json (which
// internal/httpapi's tests check against the handler), so the two never
// drift apart.
func TestConnectorIsOpenAPI(t *testing.T) {
	t.Parallel()
	_, connector := readSwagger(t)
	openapi, err := os.ReadFile(filepath.Join(root, "openapi.json"))
	require.NoError(t, err)
	assert.Equal(t, string(openapi), string(connector), "connector/apiDefinition.swagger.json is a copy of openapi.json: cp openapi.json connector/apiDefinition.swagger.json")
}

// TestConnectorRules applies paconn's and the Swagger Validator's rules.
func TestConnectorRules(t *testing.T) {
	t.Parallel()
	doc, raw := readSwagger(t)
	assert.Less(t, len(raw), 1<<20, "a connector's definition is under 1 MB")
	assert.Equal(t, "2.0", doc.Swagger)
	assert.Regexp(t, `^[^{}/ :\\]+(?::\d+)?$`, doc.Host)
	assert.True(t, strings.HasPrefix(doc.BasePath, "/"))
	for _, kw := range unsupported {
		assert.NotContains(t, string(raw), kw+":", "unsupported keyword")
	}

	// The key is the code query parameter: Azure Functions reads it there,
	// and a 202's Location carries it, so polling is authorized.
	require.Len(t, doc.SecurityDefinitions, 1, "only the first security definition is used")
	for name, def := range doc.SecurityDefinitions {
		assert.Equal(t, "apiKey", def["type"])
		assert.Equal(t, "query", def["in"])
		assert.Equal(t, "code", def["name"])
		require.Len(t, doc.Security, 1)
		assert.Equal(t, []string{}, doc.Security[0][name], "an API key requirement names no scopes")
		var props struct {
			Properties struct {
				ConnectionParameters map[string]struct {
					Type string `json:"type"`
				} `json:"connectionParameters"`
				IconBrandColor string `json:"iconBrandColor"`
			} `json:"properties"`
		}
		readJSON(t, "connector/apiProperties.json", &props)
		assert.Equal(t, "securestring", props.Properties.ConnectionParameters[name].Type, "apiProperties.json asks for the key")
		assert.Regexp(t, `^#[0-9A-Fa-f]{6}$`, props.Properties.IconBrandColor)
	}

	seen := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			where := method + " " + path
			assert.Regexp(t, operationIDPattern, op.OperationID, where)
			assert.False(t, seen[op.OperationID], "operationId %s is not unique", op.OperationID)
			seen[op.OperationID] = true
			assert.Regexp(t, summaryPattern, op.Summary, "%s: a summary without punctuation", where)
			assert.NotRegexp(t, productNames, op.Summary, "%s: no product names in a summary", where)
			assert.Less(t, len(op.Summary), 120, where)
			assert.NotEmpty(t, op.Description, where)
			if op.Visibility != "" {
				assert.Contains(t, visibilities, op.Visibility, where)
			}
			if method == "post" {
				assert.Contains(t, op.Consumes, "application/json", "%s declares what it consumes", where)
			}
			checkParameters(t, where, path, method, op.Parameters)

			withSchema := 0
			for code, resp := range op.Responses {
				assert.NotEmpty(t, resp["description"], "%s %s", where, code)
				if _, ok := resp["schema"]; ok {
					withSchema++
					assert.Equal(t, "200", code, "%s: the designer uses one schema, the success answer's", where)
				}
			}
			assert.Equal(t, 1, withSchema, "%s: one response with a schema", where)

			if op.Pageable != nil {
				// Custom connectors page only over a top-level "value" array
				// with the next link beside it, never inside an allOf.
				ref := op.Responses["200"]["schema"].(map[string]any)["$ref"].(string)
				def := doc.Definitions[strings.TrimPrefix(ref, "#/definitions/")]
				props, _ := def["properties"].(map[string]any)
				assert.Contains(t, props, "value", "%s: pages are a value array", where)
				assert.Contains(t, props, op.Pageable["nextLinkName"], "%s: the next link beside it", where)
			}
			if accepted, ok := op.Responses["202"]; ok {
				headers, _ := accepted["headers"].(map[string]any)
				assert.Contains(t, headers, "Location", "%s: the asynchronous pattern's 202 declares Location", where)
				assert.Contains(t, headers, "Retry-After", "%s: and Retry-After", where)
			}
		}
	}
	require.NotEmpty(t, seen)

	for name, def := range doc.Definitions {
		checkSchema(t, name, def)
	}
}

func checkParameters(t *testing.T, where, path, method string, params []map[string]any) {
	t.Helper()
	for _, p := range params {
		name := where + " " + p["name"].(string)
		assert.NotEmpty(t, p["x-ms-summary"], "%s: a display name", name)
		assert.NotEmpty(t, p["description"], name)
		if v, ok := p["x-ms-visibility"]; ok {
			assert.Contains(t, visibilities, v, name)
		}
		switch p["in"] {
		case "path":
			assert.Contains(t, path, "{"+p["name"].(string)+"}", name)
			assert.Equal(t, true, p["required"], "%s: path parameters are required", name)
			assert.Equal(t, "single", p["x-ms-url-encoding"], name)
		case "query":
			assert.NotContains(t, p, "x-ms-url-encoding", "%s: query parameters are always encoded once", name)
		case "body":
			assert.NotEqual(t, "get", method, "%s: no body in a fetch operation", name)
			assert.Contains(t, p, "schema", name)
		}
	}
}

// checkSchema: every property has a display name and a description (a bare
// $ref takes them from its definition, as no member may stand beside a
// $ref), durations offer forms a maker can type, and visibilities are
// known.
func checkSchema(t *testing.T, where string, schema map[string]any) {
	t.Helper()
	if ref, ok := schema["$ref"]; ok {
		assert.Len(t, schema, 1, "%s: nothing beside $ref (%s)", where, ref)
		return
	}
	for _, part := range anySlice(schema["allOf"]) {
		checkSchema(t, where, part.(map[string]any))
	}
	if items, ok := schema["items"].(map[string]any); ok {
		checkSchema(t, where+"[]", items)
	}
	props, _ := schema["properties"].(map[string]any)
	for name, p := range props {
		p := p.(map[string]any)
		at := where + "." + name
		_, bare := p["$ref"]
		assert.False(t, bare, "%s: a property that is a definition is {allOf: [$ref]} with its own description (nothing may stand beside a $ref)", at)
		assert.NotEmpty(t, p["x-ms-summary"], "%s: a display name", at)
		assert.NotEmpty(t, p["description"], "%s: every property has a description", at)
		checkTitleCase(t, at, p["x-ms-summary"])
		checkEnumDescription(t, at, p)
		if v, ok := p["x-ms-visibility"]; ok {
			assert.Contains(t, visibilities, v, at)
		}
		if desc, _ := p["description"].(string); strings.Contains(desc, "ISO 8601") {
			examples := durationExample.FindAllString(desc, -1)
			assert.GreaterOrEqual(t, len(examples), 2, "%s: duration examples", at)
			for _, e := range examples {
				_, ok := remediate.ParseDuration(e)
				assert.True(t, ok, "%s: the example %s is accepted", at, e)
			}
		}
		checkSchema(t, at, p)
	}
}

func anySlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// TestConnectorIcon: the icon is a PNG paconn can upload.
func TestConnectorIcon(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(root, "connector/icon.png"))
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(raw))
	require.NoError(t, err)
	assert.Equal(t, 230, img.Bounds().Dx())
	assert.Equal(t, 230, img.Bounds().Dy())
}

// checkTitleCase: a display name in Title Case (every word but short
// joining words capitalized; the first and last always).
func checkTitleCase(t *testing.T, at string, v any) {
	t.Helper()
	s, _ := v.(string)
	words := strings.Fields(s)
	for i, w := range words {
		w = strings.TrimLeft(w, "(")
		if w == "" || (smallWords[w] && i > 0 && i < len(words)-1) {
			continue
		}
		assert.Regexp(t, `^[A-Z0-9]`, w, "%s: %q is not Title Case", at, s)
	}
}

var snakeValue = regexp.MustCompile(`\b[a-z]+(?:_[a-z]+)+\b`)

// checkEnumDescription: a description names only values its enum holds.
// A description that lists values ("a, b or c.") lists exactly the enum;
// any other names no snake_case value outside it.
func checkEnumDescription(t *testing.T, at string, p map[string]any) {
	t.Helper()
	enum, ok := p["enum"].([]any)
	desc, _ := p["description"].(string)
	if !ok || desc == "" {
		return
	}
	values := map[string]bool{}
	for _, e := range enum {
		values[fmt.Sprint(e)] = true
	}
	if list := regexp.MustCompile(`^([a-z_]+)((?:, [a-z_]+)*)(?: or ([a-z_]+))?\.$`); list.MatchString(desc) {
		listed := strings.FieldsFunc(strings.TrimSuffix(desc, "."), func(r rune) bool { return r == ',' || r == ' ' })
		var named []string
		for _, w := range listed {
			if w != "or" {
				named = append(named, w)
				assert.True(t, values[w], "%s: the description names %q, which the enum lacks", at, w)
			}
		}
		assert.Len(t, named, len(enum), "%s: the description lists every value", at)
		return
	}
	for _, w := range snakeValue.FindAllString(desc, -1) {
		assert.True(t, values[w], "%s: the description names %q, which the enum lacks", at, w)
	}
}

// TestConnectorMetadata: what certification asks of a connector's
// metadata: website, privacy policy, and categories from the list.
func TestConnectorMetadata(t *testing.T) {
	t.Parallel()
	var doc struct {
		Info struct {
			Metadata []struct {
				PropertyName  string `json:"propertyName"`
				PropertyValue string `json:"propertyValue"`
			} `json:"x-ms-connector-metadata"`
		} `json:"info"`
	}
	readJSON(t, "connector/apiDefinition.swagger.json", &doc)
	got := map[string]string{}
	for _, m := range doc.Info.Metadata {
		got[m.PropertyName] = m.PropertyValue
	}
	assert.Regexp(t, `^https://`, got["Website"])
	assert.Regexp(t, `^https://.*privacy`, got["Privacy policy"])
	_, err := os.Stat(filepath.Join(root, "docs/privacy.md"))
	assert.NoError(t, err, "the privacy policy the metadata links to")
	require.NotEmpty(t, got["Categories"])
	for _, c := range strings.Split(got["Categories"], ";") {
		assert.Contains(t, categories, c)
	}
}
