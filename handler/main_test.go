package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/remediate"
)

// TestDemo runs `make demo`'s command and checks what it prints: the JSON
// summary of a run over every kind of device, then a one-line account.
func TestDemo(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := func(k string) string {
		if k == "GRAPH_WRITE_RATE" {
			return "200" // the demo's simulator; keeps the test short
		}
		return os.Getenv(k)
	}
	require.NoError(t, dispatch(context.Background(), []string{"demo"}, env, &stdout, &stderr), stderr.String())
	out := stdout.String()
	i := strings.LastIndex(out, "\nHTTP ")
	require.Greater(t, i, 0, out)
	var s remediate.Summary
	require.NoError(t, json.Unmarshal([]byte(out[:i]), &s))
	assert.Equal(t, "succeeded", s.Status)
	assert.Equal(t, 39, s.Counts.Total, "40 entries, one repeated")
	assert.Equal(t, 34, s.Counts.Succeeded)
	assert.Equal(t, 5, s.Counts.Skipped)
	assert.Len(t, s.Warnings, 1)
	reasons := map[string]int{}
	for _, d := range s.Devices {
		reasons[d.Reason]++
	}
	assert.Equal(t, map[string]int{"": 34, "not_windows": 3, "not_found": 2}, reasons)
	assert.Contains(t, out[i:], "HTTP 200")
	assert.Contains(t, out[i:], "34 triggered, 5 skipped")
	// Then an asynchronous run, polled to its end and followed.
	assert.Regexp(t, `async: run [0-9a-f]{24} succeeded: 40 devices, 40 triggered; scripts: \d+ no issue, \d+ remediated`, out)
	assert.Contains(t, stderr.String(), "HTTP 202")
	// Then two rollouts: the good script passes its gate, the bad one is
	// halted after its first wave.
	assert.Regexp(t, `rollout \(good script\): run [0-9a-f]{24} succeeded: wave 1 pass \(\d+ of 10 reported, \d+% succeeded\); 40 of 40 devices triggered`, out)
	assert.Regexp(t, `rollout \(bad script\): run [0-9a-f]{24} halted: wave 1 halt .*; 10 of 40 devices triggered, 30 not attempted \(reason halted\); POST http://\S+/resume to go on`, out)
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	err := dispatch(context.Background(), []string{"launch"}, os.Getenv, &bytes.Buffer{}, &bytes.Buffer{})
	assert.ErrorContains(t, err, "unknown command")
}

func TestServeRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	env := func(k string) string {
		return map[string]string{"GRAPH_BASE_URL": "https://graph.microsoft.com/beta", "GRAPH_AUTH": "none", "MAX_CONCURRENCY": "0"}[k]
	}
	err := dispatch(context.Background(), []string{"serve"}, env, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GRAPH_AUTH")
	assert.Contains(t, err.Error(), "MAX_CONCURRENCY")
}
