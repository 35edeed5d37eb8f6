package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeCurl is a README line such as
//
//	curl -s localhost:7071/api/remediate -d @examples/x.json  # 200 "planned": 4 planned, 2 skipped (…)
var readmeCurl = regexp.MustCompile(`^curl -si? localhost:7071(/api/\w+)\s+-d @(\S+)\s+# (\d{3}) "(\w+)": (.*)$`)

// readmeCount is one "<n> <outcome>" claim of such a line.
var readmeCount = regexp.MustCompile(`([\d,]+) (planned|triggered|skipped|failed|queued)`)

// TestREADMEExamples runs every curl line of the README's local section, in
// order, against what `make run` starts (the simulator as `handler
// simulate` with the Makefile's device count, the handler as the Functions
// host starts it, without storage), and checks each answers the status,
// summary status and counts its comment claims. Every request in
// examples/ is among them, so no example can silently stop working.
func TestREADMEExamples(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	makefile, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	simArgs := regexp.MustCompile(`\./\$\(BIN\) simulate --port 8081 --devices (\d+)`).FindSubmatch(makefile)
	require.NotNil(t, simArgs, "the Makefile's run target starts the simulator")

	simPort := freePort(t)
	sim := exec.Command(binary, "simulate", "--port", simPort, "--devices", string(simArgs[1]))
	sim.Env = []string{runMain, quickExit}
	require.NoError(t, sim.Start())
	t.Cleanup(func() { _ = sim.Process.Signal(syscall.SIGTERM); _ = sim.Wait() })
	simURL := "http://127.0.0.1:" + simPort + "/beta"
	require.Eventually(t, func() bool {
		resp, err := http.Get(simURL + "/deviceManagement/managedDevices?$top=1")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, 30*time.Second, 25*time.Millisecond)
	// make run sets no worker id: the handler keeps runs in the process.
	w := startWorker(t, "GRAPH_BASE_URL="+simURL, "GRAPH_AUTH=none", "FUNCTIONS_CUSTOMHANDLER_WORKER_ID=")

	ran := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		m := readmeCurl.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		path, file, wantStatus, wantSummary, claims := m[1], m[2], m[3], m[4], m[5]
		ran[file] = true
		body, err := os.ReadFile(filepath.Join("..", file))
		require.NoError(t, err)
		reply, answer := hostPost(t, w.url+path, string(body))
		assert.Equal(t, wantStatus, strconv.Itoa(reply.StatusCode), "%s: %s", file, answer)
		var got struct {
			Status string         `json:"status"`
			Counts map[string]int `json:"counts"`
			Queued int            `json:"queued"`
		}
		require.NoError(t, json.Unmarshal(answer, &got), "%s", answer)
		assert.Equal(t, wantSummary, got.Status, file)
		found := readmeCount.FindAllStringSubmatch(claims, -1)
		require.NotEmpty(t, found, "%s: the README line claims no counts", file)
		for _, c := range found {
			n, _ := strconv.Atoi(strings.ReplaceAll(c[1], ",", ""))
			var have int
			switch c[2] {
			case "triggered":
				have = got.Counts["succeeded"]
			case "queued":
				have = got.Queued
			default:
				have = got.Counts[c[2]]
			}
			assert.Equal(t, n, have, "%s: the README says %s %s", file, c[1], c[2])
		}
	}

	examples, err := filepath.Glob("../examples/*.json")
	require.NoError(t, err)
	for _, f := range examples {
		name := strings.TrimPrefix(f, "../")
		var doc map[string]any
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, &doc), name)
		if _, template := doc["$schema"]; template {
			continue // deployment templates: TestExampleTemplates checks them
		}
		assert.True(t, ran[name], "%s is not run by any curl line of the README", name)
	}
}
