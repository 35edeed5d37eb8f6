package httpapi

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/remediate"
)

// The status codes each operation can answer with (see Remediate and
// Alert, and Summary.HTTPStatus).
var returnable = map[string][]int{
	"/remediate": {200, 400, 403, 413, 422, 424, 428, 503},
	"/alert":     {200, 400, 403, 409, 413, 422, 424, 428, 503},
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
		Properties map[string]any `json:"properties"`
		Example    any            `json:"example"`
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
	assert.Equal(t, "x-functions-key", doc.SecurityDefinitions["function_key"]["name"])

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

	api, _, _ := newAPI(t, Options{})

	// The examples name scripts the simulated tenant lacks: it is the shape
	// that must be accepted (not a 400), and the answer a documented one.
	example, _ := json.Marshal(doc.Definitions["RemediationRequest"].Example)
	res := api.Remediate(context.Background(), strings.NewReader(string(example)))
	assert.NotEqual(t, 400, res.Status, "%+v", res.Body)
	assert.Contains(t, returnable["/remediate"], res.Status)

	alertExample, _ := json.Marshal(doc.Paths["/alert"]["post"].Parameters[1].Schema["example"])
	res = api.Alert(context.Background(), alertExample, "")
	assert.NotEqual(t, 400, res.Status, "%+v", res.Body)
	assert.Contains(t, returnable["/alert"], res.Status)
}

func refs(raw []byte) []string {
	var out []string
	for _, part := range strings.Split(string(raw), `"$ref": "`)[1:] {
		out = append(out, part[:strings.Index(part, `"`)])
	}
	return out
}
