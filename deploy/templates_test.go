package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The members the services accept (ARM: "Template format"; Logic Apps:
// "Workflow Definition Language", which rejects unknown members with
// "Could not find member …").
var (
	templateMembers   = []string{"$schema", "contentVersion", "metadata", "apiProfile", "parameters", "functions", "variables", "resources", "outputs"}
	armParamTypes     = []string{"string", "securestring", "int", "bool", "object", "secureobject", "array"}
	definitionMembers = []string{"$schema", "contentVersion", "parameters", "triggers", "actions", "outputs", "staticResults"}
	workflowTypes     = []string{"array", "bool", "float", "int", "object", "secureobject", "securestring", "string"}
	actionMembers     = []string{"type", "kind", "inputs", "runAfter", "limit", "runtimeConfiguration", "operationOptions", "description", "trackedProperties", "metadata"}
	httpInputs        = []string{"method", "uri", "headers", "queries", "body", "authentication", "retryPolicy", "cookie"}
	runAfterStatuses  = []string{"Succeeded", "Failed", "Skipped", "TimedOut"}
	actionTypes       = []string{"Http", "Compose", "Query", "If", "Switch", "Foreach", "Until", "Scope", "Terminate", "Response", "SetVariable", "InitializeVariable", "Wait"}
	isoDuration       = regexp.MustCompile(`^P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$`)
	armRef            = regexp.MustCompile(`\b(parameters|variables)\('(\w+)'\)`)
	wdlRef            = regexp.MustCompile(`\b(parameters|body|outputs|actions)\('(\w+)'\)`)
)

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, path))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, v), path)
}

// strings walks v and calls f with every string in it.
func eachString(v any, f func(string)) {
	switch x := v.(type) {
	case string:
		f(x)
	case []any:
		for _, e := range x {
			eachString(e, f)
		}
	case map[string]any:
		for _, e := range x {
			eachString(e, f)
		}
	}
}

func keysOf(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func assertMembers(t *testing.T, where string, m map[string]any, allowed []string) {
	t.Helper()
	for _, k := range keysOf(m) {
		assert.Contains(t, allowed, k, "%s: unknown member %q", where, k)
	}
}

// TestTemplatesDeploy: the deployment template and the example templates
// have only members ARM knows, and every parameter or variable an
// expression names is declared (a nested deployment's own template, with
// inner scope, against its own declarations).
func TestTemplatesDeploy(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"deploy/azuredeploy.json", "examples/alert-rule.json", "examples/logic-app-workflow.json"} {
		var tpl map[string]any
		readJSON(t, path, &tpl)
		checkTemplate(t, path, tpl)
	}
}

func checkTemplate(t *testing.T, path string, tpl map[string]any) {
	t.Helper()
	assertMembers(t, path, tpl, templateMembers)
	params, _ := tpl["parameters"].(map[string]any)
	vars, _ := tpl["variables"].(map[string]any)
	for name, p := range params {
		typ, _ := p.(map[string]any)["type"].(string)
		assert.Contains(t, armParamTypes, strings.ToLower(typ), "%s: parameter %s", path, name)
	}
	resources, _ := tpl["resources"].([]any)
	assert.NotEmpty(t, resources, path)
	outer := map[string]any{"parameters": tpl["parameters"], "variables": tpl["variables"], "outputs": tpl["outputs"]}
	var own []any
	for _, r := range resources {
		r := r.(map[string]any)
		props, _ := r["properties"].(map[string]any)
		if opts, _ := props["expressionEvaluationOptions"].(map[string]any); r["type"] == "Microsoft.Resources/deployments" && opts["scope"] == "inner" {
			checkTemplate(t, path+" (nested "+fmt.Sprint(r["name"])+")", props["template"].(map[string]any))
			rest := map[string]any{}
			for k, v := range r {
				rest[k] = v
			}
			rest["properties"] = map[string]any{"parameters": props["parameters"]}
			own = append(own, rest)
			continue
		}
		own = append(own, r)
	}
	outer["resources"] = own
	for _, section := range []string{"parameters", "variables", "resources", "outputs"} {
		eachString(outer[section], func(s string) {
			if !strings.HasPrefix(s, "[") {
				return
			}
			for _, m := range armRef.FindAllStringSubmatch(s, -1) {
				declared := params
				if m[1] == "variables" {
					declared = vars
				}
				assert.Contains(t, declared, m[2], "%s: %s names an undeclared %s", path, s, m[1])
			}
		})
	}
}

// TestLogicAppWorkflow: the example workflow is one Logic Apps accepts as it
// is (known members, every parameter with a default and a value, runAfter
// naming real actions), calls remediator with the key in the URL so the
// 202's Location carries it, polls long runs, and does not re-send a run.
func TestLogicAppWorkflow(t *testing.T) {
	t.Parallel()
	var tpl struct {
		Resources []struct {
			Type       string `json:"type"`
			Properties struct {
				Parameters map[string]any `json:"parameters"`
				Definition map[string]any `json:"definition"`
			} `json:"properties"`
		} `json:"resources"`
	}
	readJSON(t, "examples/logic-app-workflow.json", &tpl)
	require.Len(t, tpl.Resources, 1)
	require.Equal(t, "Microsoft.Logic/workflows", tpl.Resources[0].Type)
	def := tpl.Resources[0].Properties.Definition
	assertMembers(t, "definition", def, definitionMembers)

	declared := def["parameters"].(map[string]any)
	for name, p := range declared {
		p := p.(map[string]any)
		assert.Contains(t, workflowTypes, strings.ToLower(p["type"].(string)), "parameter %s", name)
		assert.Contains(t, p, "defaultValue", "Logic Apps requires a defaultValue on parameter %s", name)
		assert.Contains(t, tpl.Resources[0].Properties.Parameters, name, "parameter %s gets a value at deployment", name)
	}
	for name := range tpl.Resources[0].Properties.Parameters {
		assert.Contains(t, declared, name, "the workflow sets parameter %s, which the definition lacks", name)
	}

	actions := def["actions"].(map[string]any)
	for name, a := range actions {
		a := a.(map[string]any)
		assertMembers(t, name, a, actionMembers)
		assert.Contains(t, actionTypes, a["type"], name)
		runAfter, ok := a["runAfter"].(map[string]any)
		require.True(t, ok, "%s has runAfter", name)
		for dep, statuses := range runAfter {
			assert.Contains(t, actions, dep, "%s runs after unknown action %s", name, dep)
			for _, s := range statuses.([]any) {
				assert.Contains(t, runAfterStatuses, s, "%s", name)
			}
		}
		if limit, ok := a["limit"].(map[string]any); ok {
			assert.Regexp(t, isoDuration, limit["timeout"], name)
		}
		eachString(a, func(s string) {
			for _, m := range wdlRef.FindAllStringSubmatch(s, -1) {
				if m[1] == "parameters" {
					assert.Contains(t, declared, m[2], "%s: undeclared parameter %s", name, m[2])
				} else {
					assert.Contains(t, actions, m[2], "%s: %s of an unknown action", name, m[1])
				}
			}
		})
		if a["type"] != "Http" {
			continue
		}
		inputs := a["inputs"].(map[string]any)
		assertMembers(t, name+".inputs", inputs, httpInputs)
		assert.Contains(t, inputs["uri"], "?code=", "%s: the key in the URL, so the 202's Location carries it when Logic Apps polls", name)
		assert.NotContains(t, inputs["headers"], "x-functions-key", name)
	}

	remediate := actions["Remediate"].(map[string]any)
	assert.Equal(t, "none", remediate["inputs"].(map[string]any)["retryPolicy"].(map[string]any)["type"], "a run is never re-sent")
	timeout := remediate["limit"].(map[string]any)["timeout"].(string)
	assert.Regexp(t, `^PT([2-9]|\d\d)H$`, timeout, "the polling of a long run is not cut at two minutes")
	// 424/422/428 are answers: what follows the run runs after Failed too.
	for _, a := range actions {
		if deps, ok := a.(map[string]any)["runAfter"].(map[string]any)["Remediate"]; ok {
			assert.Contains(t, deps, "Failed")
		}
	}
}

// TestAlertRuleExample: the action group calls alert with its function key
// (alert is authLevel function), with the common alert schema, and the rule
// hands the script and the device dimension the handler reads.
func TestAlertRuleExample(t *testing.T) {
	t.Parallel()
	var tpl struct {
		Resources []struct {
			Type       string         `json:"type"`
			Properties map[string]any `json:"properties"`
		} `json:"resources"`
	}
	readJSON(t, "examples/alert-rule.json", &tpl)
	var function map[string]any
	var rule string
	for _, r := range tpl.Resources {
		switch r.Type {
		case "Microsoft.Insights/actionGroups":
			function = r.Properties["azureFunctionReceivers"].([]any)[0].(map[string]any)
		case "Microsoft.Insights/scheduledQueryRules":
			b, _ := json.Marshal(r.Properties)
			rule = string(b)
		}
	}
	require.NotNil(t, function)
	assert.Equal(t, "alert", function["functionName"])
	assert.Equal(t, true, function["useCommonAlertSchema"])
	url := function["httpTriggerUrl"].(string)
	assert.Contains(t, url, "/api/alert?code=")
	assert.Contains(t, url, "listKeys(format('{0}/functions/alert'")
	assert.Contains(t, rule, `"scriptPolicyId"`)
	assert.Contains(t, rule, `"name":"DeviceId"`)

	var fn struct {
		Bindings []map[string]any `json:"bindings"`
	}
	readJSON(t, "alert/function.json", &fn)
	assert.Equal(t, "function", fn.Bindings[0]["authLevel"], "the key the URL carries is what the function asks for")
}
