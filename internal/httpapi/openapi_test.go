package httpapi

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/remediate"
)

// The status codes each operation can answer with (see Remediate and
// Alert, and Summary.HTTPStatus).
var returnable = map[string][]int{
	"/remediate":                  {200, 202, 400, 403, 409, 413, 422, 424, 428, 429, 503},
	"/remediate/runs/{id}":        {200, 202, 400, 404, 424, 429, 503},
	"/alert/runs/{id}":            {200, 202, 400, 404, 424, 429, 503},
	"/remediate/runs/{id}/cancel": {200, 202, 403, 404, 424, 429, 503},
	"/alert/runs/{id}/cancel":     {200, 202, 403, 404, 424, 429, 503},
	"/remediate/runs/{id}/resume": {200, 202, 403, 404, 424, 429, 503},
	"/alert/runs/{id}/resume":     {200, 202, 403, 404, 424, 429, 503},
	"/runs/{id}":                  {200, 202, 400, 404, 424, 429, 503},
	"/alert":                      {200, 202, 400, 403, 409, 413, 422, 424, 428, 429, 503},
}

type swagger struct {
	Swagger             string                    `json:"swagger"`
	SecurityDefinitions map[string]map[string]any `json:"securityDefinitions"`
	Paths               map[string]map[string]struct {
		OperationID string `json:"operationId"`
		Parameters  []struct {
			In     string         `json:"in"`
			Schema map[string]any `json:"schema"`
		} `json:"parameters"`
		Responses map[string]map[string]any `json:"responses"`
	} `json:"paths"`
	Definitions map[string]struct {
		Properties map[string]any   `json:"properties"`
		AllOf      []map[string]any `json:"allOf"`
		Example    any              `json:"example"`
	} `json:"definitions"`
}

// TestOpenAPI checks openapi.json, the Swagger 2.0 document Power Automate
// custom connectors and Logic Apps import: it is well formed, its examples
// are accepted by the real handler, and it documents exactly the status
// codes the handler can return.
func TestOpenAPI(t *testing.T) {
	raw, err := os.ReadFile("../../openapi.json")
	require.NoError(t, err)
	var doc swagger
	require.NoError(t, json.Unmarshal(raw, &doc))
	assert.Equal(t, "2.0", doc.Swagger)
	assert.Equal(t, "code", doc.SecurityDefinitions["api_key"]["name"], "the key travels in the query, so a 202's Location carries it")
	assert.Equal(t, "query", doc.SecurityDefinitions["api_key"]["in"])

	for _, ref := range refs(raw) {
		_, ok := doc.Definitions[strings.TrimPrefix(ref, "#/definitions/")]
		assert.True(t, ok, "unresolved %s", ref)
	}
	for path, ops := range doc.Paths {
		want, ok := returnable[path]
		require.True(t, ok, "undocumented path %s", path)
		for _, op := range ops {
			var got []int
			for code := range op.Responses {
				n, err := strconv.Atoi(code)
				require.NoError(t, err)
				got = append(got, n)
				assert.NotEmpty(t, op.Responses[code]["description"])
			}
			slices.Sort(got)
			assert.Equal(t, want, got, "%s: documented codes are the codes it can return", path)
		}
	}

	// Every request property is one the decoder knows.
	for prop := range doc.Definitions["RemediationRequest"].Properties {
		_, err := remediate.Decode(strings.NewReader(`{"` + prop + `":null}`))
		assert.NoError(t, err, "property %s", prop)
	}

	api, _, _ := newAPI(t, app.Options{})
	h := api.Handler()

	// The examples name scripts the simulated tenant lacks: it is the shape
	// that must be accepted (not a 400), and the answer a documented one.
	example, _ := json.Marshal(doc.Definitions["RemediationRequest"].Example)
	status, _, body := call(h, "POST", "/api/remediate", string(example))
	assert.NotEqual(t, 400, status, "%s", body)
	assert.Contains(t, returnable["/remediate"], status)

	// Every documented path is a route of the handler, and every route is
	// documented.
	for _, rt := range Routes {
		_, path, _ := strings.Cut(rt.Pattern, " ")
		assert.Contains(t, doc.Paths, strings.TrimPrefix(path, "/api"), "route %s is documented", rt.Pattern)
	}
	for path := range doc.Paths {
		if strings.HasSuffix(path, "{id}") {
			status, _, _ = call(h, "GET", "/api"+strings.ReplaceAll(path, "{id}", "0123456789abcdef01234567"), "")
			assert.Contains(t, returnable[path], status, path)
		}
	}

	alertExample, _ := json.Marshal(doc.Paths["/alert"]["post"].Parameters[1].Schema["example"])
	status, _, body = call(h, "POST", "/api/alert", string(alertExample))
	assert.NotEqual(t, 400, status, "%s", body)
	assert.Contains(t, returnable["/alert"], status)
}

func refs(raw []byte) []string {
	var out []string
	for _, part := range strings.Split(string(raw), `"$ref": "`)[1:] {
		out = append(out, part[:strings.Index(part, `"`)])
	}
	return out
}

// TestOpenAPIAsyncShapes: the asynchronous answers' documented properties
// are the ones the handler writes.
func TestOpenAPIAsyncShapes(t *testing.T) {
	raw, err := os.ReadFile("../../openapi.json")
	require.NoError(t, err)
	var doc swagger
	require.NoError(t, json.Unmarshal(raw, &doc))
	keys := func(v any) []string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	documented := func(name string) []string {
		def := doc.Definitions[name]
		props := def.Properties
		if len(def.AllOf) == 2 {
			props = def.AllOf[1]["properties"].(map[string]any)
		}
		var out []string
		for k := range props {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	assert.Equal(t, documented("Accepted"), keys(Accepted{EstimatedDurationMS: 1}))
	assert.Equal(t, documented("FollowUp"), keys(remediate.FollowUp{State: "x", DetectionState: "x", RemediationState: "x", Output: "x", Error: "x",
		LastStateUpdateDateTime: time.Now()}))
	page := keys(RunPage{Summary: &remediate.Summary{}, NextLink: "x", ResumeURL: "x", CancelURL: "x"})
	for _, k := range documented("RunPage") {
		assert.Contains(t, page, k)
	}
	running := keys(Running{Summary: &remediate.Summary{}})
	for _, k := range documented("Running") {
		assert.Contains(t, running, k)
	}
	for _, k := range []string{"triggered_at", "follow_up"} {
		assert.Contains(t, doc.Definitions["DeviceResult"].Properties, k)
	}
}
