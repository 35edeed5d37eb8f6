package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// planParams are the parameter sets the template tests deploy: both
// plans, both credential modes.
var planParams = map[string]map[string]any{
	"flex":                 nil,
	"flex, keyvault":       {"graphAuth": "keyvault", "graphTenantId": "3f9c5a2e-0000-4000-8000-0000000000aa", "graphClientId": "3f9c5a2e-0000-4000-8000-0000000000bb", "deployerPrincipalId": "22222222-0000-4000-8000-000000000002"},
	"consumption":          {"hostingPlan": "Consumption"},
	"consumption, package": {"hostingPlan": "Consumption", "packageUri": "https://example.invalid/remediator.zip"},
}

// TestTemplateDeploysTwice: a second deployment with the same parameters
// changes nothing that works. The site resource writes no app settings of
// its own (siteConfig.appSettings replaces every setting: the package
// config-zip recorded, settings added later); the settings resource merges
// the template's into the existing ones, so what a first deployment, a
// zip deployment and an administrator wrote is all still there.
func TestTemplateDeploysTwice(t *testing.T) {
	t.Parallel()
	tpl := readTemplate(t)
	for name, params := range planParams {
		t.Run(name, func(t *testing.T) {
			resources, _ := deploy(t, tpl, params, armEnv{principal: "p"})
			for _, r := range resources {
				if r.Type == "Microsoft.Web/sites" {
					cfg := asMap(asMap(r.Properties)["siteConfig"])
					assert.NotContains(t, cfg, "appSettings", "siteConfig.appSettings would replace every setting on redeployment")
				}
			}
			platform := map[string]string{"WEBSITE_AUTH_ENABLED": "False"}
			first := appSettings(t, tpl, params, platform)
			// What happens between the deployments: a zip deployment on
			// Consumption records its package; an administrator adds settings.
			later := map[string]string{"CALLER_POLICY": `{"function-key":{"scripts":["*"]}}`, "PUBLIC_BASE_URL": "https://remediator.contoso.com"}
			if params["hostingPlan"] == "Consumption" && params["packageUri"] == nil {
				later["WEBSITE_RUN_FROM_PACKAGE"] = "https://stremed.blob.core.windows.net/scm-releases/remediator.zip?sv=…"
			}
			between := map[string]string{}
			for k, v := range first {
				between[k] = v
			}
			for k, v := range later {
				between[k] = v
			}
			second := appSettings(t, tpl, params, between)
			assert.Equal(t, between, second, "the second deployment keeps every setting as it was")
			assert.Equal(t, "False", second["WEBSITE_AUTH_ENABLED"], "platform settings are kept too")

			isFlex := params["hostingPlan"] != "Consumption"
			for k := range first {
				if isFlex {
					assert.False(t, k == "FUNCTIONS_WORKER_RUNTIME" || k == "WEBSITE_RUN_FROM_PACKAGE" || k == "AzureWebJobsStorage" ||
						strings.HasPrefix(k, "WEBSITE_CONTENT") || k == "FUNCTIONS_EXTENSION_VERSION",
						"Flex Consumption refuses %s (its runtime and package are in functionAppConfig)", k)
				}
			}
			if isFlex {
				assert.NotEmpty(t, first["AzureWebJobsStorage__accountName"], "identity-based storage")
			} else {
				assert.Equal(t, "custom", first["FUNCTIONS_WORKER_RUNTIME"])
				assert.Equal(t, "~4", first["FUNCTIONS_EXTENSION_VERSION"])
				assert.Contains(t, first["AzureWebJobsStorage"], "AccountName=")
			}
			assert.Equal(t, "Authorization=AAD", first["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"], "Application Insights with Entra authentication")
			assert.NotEmpty(t, first["APPLICATIONINSIGHTS_CONNECTION_STRING"])
		})
	}
}

// TestTemplateResources: the Key Vault only where it is used, named so a
// re-created group is not blocked by default; every role assignment named
// after its principal (a re-created site gets new ones instead of
// RoleAssignmentUpdateNotPermitted); everything that uses the deployment
// container depends on it; Application Insights with local authentication
// off and the app identity as its publisher.
func TestTemplateResources(t *testing.T) {
	t.Parallel()
	tpl := readTemplate(t)
	for name, params := range planParams {
		t.Run(name, func(t *testing.T) {
			const principal = "11111111-0000-4000-8000-000000000001"
			resources, outputs := deploy(t, tpl, params, armEnv{principal: principal})
			byType := map[string][]deployed{}
			for _, r := range resources {
				byType[r.Type] = append(byType[r.Type], r)
			}
			useVault := params["graphAuth"] == "keyvault"
			vaults := byType["Microsoft.KeyVault/vaults"]
			if !useVault {
				assert.Empty(t, vaults, "no vault in managed-identity mode, where nothing reads one")
				assert.NotContains(t, outputs, "keyVaultName")
			} else {
				require.Len(t, vaults, 1)
				assert.Nil(t, asMap(vaults[0].Properties)["enablePurgeProtection"], "purge protection only when asked for")
				assert.NotEmpty(t, outputs["keyVaultName"])
			}

			roles := map[string]bool{}
			for _, ra := range byType["Microsoft.Authorization/roleAssignments"] {
				p := asMap(ra.Properties)
				assert.Contains(t, ra.Name, p["principalId"].(string), "the name of %v includes its principal", p["roleDefinitionId"])
				scope := ra.Raw["scope"].(string)
				id := p["roleDefinitionId"].(string)
				roles[id[strings.LastIndex(id, "/")+1:]+" on "+scope] = true
				if p["principalId"] != principal {
					assert.Equal(t, "22222222-0000-4000-8000-000000000002", p["principalId"], "the deployer")
					assert.Contains(t, id, "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "the deployer may write the vault's secrets")
				}
			}
			want := []string{"b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "974c5e8b-45b9-4653-ba55-5f855dd0fb88", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "3913510d-42f4-4e42-8a64-420c390055eb"}
			if useVault {
				want = append(want, "4633458b-17de-408a-b874-0445c86b69e6", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7")
			}
			assert.Len(t, roles, len(want), "%v", roles)
			for _, w := range want {
				found := false
				for r := range roles {
					found = found || strings.HasPrefix(r, w)
				}
				assert.True(t, found, "role %s is assigned", w)
			}

			ins := byType["Microsoft.Insights/components"]
			require.Len(t, ins, 1)
			assert.Equal(t, true, asMap(ins[0].Properties)["DisableLocalAuth"])

			// Everything that names the deployment container depends on it.
			containers := byType["Microsoft.Storage/storageAccounts/blobServices/containers"]
			if params["hostingPlan"] == "Consumption" {
				assert.Empty(t, containers)
				return
			}
			require.Len(t, containers, 1)
			container := containers[0].Name[strings.LastIndex(containers[0].Name, "/")+1:]
			for _, r := range resources {
				if r.Nested || r.Type == containers[0].Type {
					continue
				}
				b, _ := json.Marshal(r.Properties)
				if strings.Contains(string(b), container) || r.Type == "Microsoft.Web/sites/extensions" {
					found := false
					for _, d := range r.DependsOn {
						found = found || strings.HasSuffix(d, "/blobServices/default/containers/"+container)
					}
					assert.True(t, found, "%s %s uses the deployment container and depends on it: %v", r.Type, r.Name, r.DependsOn)
				}
			}
		})
	}
}

// TestNoExampleNeedsAHostKey: the examples, the connector and the README's
// deployment steps use function keys (the least that works), never the
// host's keys.
func TestNoExampleNeedsAHostKey(t *testing.T) {
	t.Parallel()
	hostKey := regexp.MustCompile(`(?i)host/default|/host/|masterKey|functionKeys|listKeys\([^)]*'/host`)
	files, _ := filepath.Glob(filepath.Join(root, "examples", "*"))
	files = append(files, filepath.Join(root, "connector", "apiDefinition.swagger.json"), filepath.Join(root, "connector", "apiProperties.json"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		assert.NotRegexp(t, hostKey, string(raw), f)
	}
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "az ") {
			assert.NotRegexp(t, hostKey, line, "README: %s", line)
		}
	}
}

// TestTemplateAuthentication: App Service Authentication only when asked
// for, and then for every request: a token for the app registration is
// required (401 otherwise), for the audience given or api://<client id>.
func TestTemplateAuthentication(t *testing.T) {
	t.Parallel()
	tpl := readTemplate(t)
	find := func(resources []deployed) map[string]any {
		for _, r := range resources {
			if strings.HasSuffix(r.Name, "/authsettingsV2") {
				return asMap(r.Properties)
			}
		}
		return nil
	}
	resources, _ := deploy(t, tpl, nil, armEnv{principal: "p"})
	assert.Nil(t, find(resources), "no authentication unless asked for")

	resources, _ = deploy(t, tpl, map[string]any{"authClientId": "7e1c2f3a-0000-4000-8000-0000000000aa",
		"authAllowedClientApplications": []any{"5b2a0c1d-0000-4000-8000-0000000000bb"}}, armEnv{principal: "p"})
	auth := find(resources)
	require.NotNil(t, auth)
	gv := asMap(auth["globalValidation"])
	assert.Equal(t, true, gv["requireAuthentication"])
	assert.Equal(t, "Return401", gv["unauthenticatedClientAction"], "a flow gets a 401, never a login page")
	aad := asMap(asMap(auth["identityProviders"])["azureActiveDirectory"])
	assert.Equal(t, "7e1c2f3a-0000-4000-8000-0000000000aa", asMap(aad["registration"])["clientId"])
	assert.Equal(t, "https://login.microsoftonline.com/tenant/v2.0", asMap(aad["registration"])["openIdIssuer"])
	v := asMap(aad["validation"])
	assert.Equal(t, []any{"api://7e1c2f3a-0000-4000-8000-0000000000aa"}, v["allowedAudiences"])
	assert.Equal(t, []any{"5b2a0c1d-0000-4000-8000-0000000000bb"}, asMap(v["defaultAuthorizationPolicy"])["allowedApplications"])
}
