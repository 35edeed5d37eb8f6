package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/config"
)

const root = ".."

// readTemplate is deploy/azuredeploy.json as a generic value.
func readTemplate(t *testing.T) map[string]any {
	t.Helper()
	var tpl map[string]any
	readJSON(t, "deploy/azuredeploy.json", &tpl)
	return tpl
}

// appSettings deploys the template with params onto a site whose settings
// are existing, and returns the settings the site has afterwards.
func appSettings(t *testing.T, tpl map[string]any, params map[string]any, existing map[string]string) map[string]string {
	t.Helper()
	env := armEnv{principal: "11111111-0000-4000-8000-000000000001", existing: map[string]any{}}
	for k, v := range existing {
		env.existing[k] = v
	}
	resources, _ := deploy(t, tpl, params, env)
	var found map[string]any
	for _, r := range resources {
		if r.Type == "Microsoft.Web/sites/config" && strings.HasSuffix(r.Name, "/appsettings") {
			found = asMap(r.Properties)
		}
	}
	require.NotNil(t, found, "the template writes the app settings")
	out := map[string]string{}
	for k, v := range found {
		s, ok := v.(string)
		require.True(t, ok, "setting %s is %T, not a string", k, v)
		out[k] = s
	}
	return out
}

// azureSets is what the Functions host and the template's other settings
// add on Flex Consumption.
var azureSets = map[string]string{
	"AzureWebJobsStorage__accountName":  "stremed0123456789abc",
	"WEBSITE_HOSTNAME":                  "remediator-abc.azurewebsites.net",
	"FUNCTIONS_CUSTOMHANDLER_PORT":      "36001",
	"FUNCTIONS_CUSTOMHANDLER_WORKER_ID": "3f9c5a2e-0000-4000-8000-000000000001",
}

func load(settings map[string]string, root string) (config.Config, error) {
	return config.Load(func(name string) string {
		if name == "FUNCTIONS_APP_ROOT_PATH" {
			return root
		}
		if v, ok := azureSets[name]; ok {
			return v
		}
		return settings[name]
	})
}

// TestTemplateStartsTheApp: the settings the template writes load without
// a problem, in both credential modes and with a scheduled request, so no
// function is down at start-up.
func TestTemplateStartsTheApp(t *testing.T) {
	t.Parallel()
	tpl := readTemplate(t)
	for name, params := range map[string]map[string]any{
		"defaults": nil,
		"keyvault": {"graphAuth": "keyvault", "graphTenantId": "3f9c5a2e-0000-4000-8000-0000000000aa",
			"graphClientId": "3f9c5a2e-0000-4000-8000-0000000000bb"},
		"multi-tenant": {"graphAuth": "keyvault", "graphTenantId": "3f9c5a2e-0000-4000-8000-0000000000aa",
			"graphClientId": "3f9c5a2e-0000-4000-8000-0000000000bb", "allowedTenantIds": "3f9c5a2e-0000-4000-8000-0000000000cc"},
		"scheduled": {"scheduledRequest": `{"targets":[{"script_policy_id":"e5cae2d9-1151-449f-8551-57f93add68aa","filter":"operatingSystem eq 'Windows'"}],"dry_run":true}`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := load(appSettings(t, tpl, params, nil), root)
			require.NoError(t, err)
			assert.True(t, cfg.UnderHost)
			if req, ok := params["scheduledRequest"].(string); ok {
				assert.JSONEq(t, req, string(cfg.ScheduledRequest))
			}
		})
	}
}

// TestTemplateCoversBindings: every %SETTING% a function.json uses is an app
// setting of the template (else the function cannot load), the timeout
// the handler keeps matches host.json's, and the host's own settings are
// written for both plans.
func TestTemplateCoversBindings(t *testing.T) {
	t.Parallel()
	tpl := readTemplate(t)
	settings := appSettings(t, tpl, nil, nil)
	files, err := filepath.Glob(filepath.Join(root, "*/function.json"))
	require.NoError(t, err)
	require.Len(t, files, 7)
	expr := regexp.MustCompile(`%(\w+)%`)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range expr.FindAllStringSubmatch(string(raw), -1) {
			assert.NotEmpty(t, settings[m[1]], "%s uses %%%s%%: the template must set it", f, m[1])
		}
	}

	var host struct {
		FunctionTimeout string `json:"functionTimeout"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "host.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &host))
	hostTimeout, err := time.Parse("15:04:05", host.FunctionTimeout)
	require.NoError(t, err)
	want, err := time.ParseDuration(settings["FUNCTION_TIMEOUT"])
	require.NoError(t, err)
	assert.Equal(t, want, hostTimeout.Sub(hostTimeout.Truncate(24*time.Hour)), "FUNCTION_TIMEOUT mirrors host.json")

	_, outputs := deploy(t, tpl, nil, armEnv{principal: "p"})
	for _, out := range []string{"remediateUrl", "alertUrl", "runStatusUrl", "runsUrl", "principalId"} {
		assert.NotEmpty(t, outputs[out], "output %s", out)
	}
	assert.Contains(t, outputs["runStatusUrl"], "/api/remediate/runs/{id}", "the status URL the remediate key opens")
}

// TestPackage: the zip holds host.json, every function, an executable
// handler and every file a setting of the template (or an example) points
// to, and each file as it is in the repository.
func TestPackage(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "handler")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
	var buf bytes.Buffer
	_, err := write(&buf, root, bin)
	require.NoError(t, err)
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	inZip := map[string]*zip.File{}
	for _, f := range zr.File {
		inZip[f.Name] = f
	}

	var host struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
		} `json:"customHandler"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "host.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &host))
	exe := inZip[host.CustomHandler.Description.DefaultExecutablePath]
	require.NotNil(t, exe, "host.json's defaultExecutablePath is in the zip")
	assert.Equal(t, os.FileMode(0o755), exe.Mode().Perm(), "the handler stays executable")

	want := []string{"host.json"}
	functions, _ := filepath.Glob(filepath.Join(root, "*/function.json"))
	examples, _ := filepath.Glob(filepath.Join(root, "examples/*.json"))
	for _, f := range append(functions, examples...) {
		rel, _ := filepath.Rel(root, f)
		want = append(want, filepath.ToSlash(rel))
	}
	// A file a setting names travels with the app.
	for name, v := range appSettings(t, readTemplate(t), nil, nil) {
		if strings.HasSuffix(name, "_FILE") && v != "" {
			want = append(want, v)
		}
	}
	for _, name := range want {
		f := inZip[name]
		if !assert.NotNil(t, f, "%s is missing from the package", name) {
			continue
		}
		disk, err := os.ReadFile(filepath.Join(root, name))
		require.NoError(t, err)
		assert.Equal(t, disk, unzipped(t, f), name)
	}

	// The unpacked package starts with an example as the scheduled request.
	dir := t.TempDir()
	for name, f := range inZip {
		if !strings.HasPrefix(name, "examples/") {
			continue
		}
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "examples"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), unzipped(t, f), 0o644))
	}
	settings := appSettings(t, readTemplate(t), nil, nil)
	settings["SCHEDULED_REQUEST_FILE"] = "examples/targets-dry-run.json"
	cfg, err := load(settings, dir)
	require.NoError(t, err)
	assert.NotEmpty(t, cfg.ScheduledRequest)
}

// unzipped is a file of the package as it unpacks.
func unzipped(t *testing.T, f *zip.File) []byte {
	t.Helper()
	rc, err := f.Open()
	require.NoError(t, err)
	defer rc.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(rc)
	require.NoError(t, err)
	return b.Bytes()
}
