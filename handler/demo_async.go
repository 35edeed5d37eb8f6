package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
)

// demoAsync runs a second request asynchronously, as a Logic App would:
// 202 and Location, polls until the run is done, then follows the devices'
// scripts to their results.
func demoAsync(ctx context.Context, base string, tenant *intunesim.Tenant, stdout, stderr io.Writer) error {
	script := tenant.RemediationScript().ID
	var targets []remediate.Target
	for _, d := range tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" {
			targets = append(targets, remediate.Target{DeviceID: d.ID, ScriptPolicyID: script})
		}
	}
	body, _ := json.Marshal(remediate.Request{ManagedDevices: targets[100:140], Mode: remediate.ModeAsync})
	status, header, raw, err := demoCall(ctx, http.MethodPost, base+"/api/remediate", body)
	if err != nil {
		return err
	}
	if status != http.StatusAccepted {
		return fmt.Errorf("the asynchronous request answered %d: %s", status, raw)
	}
	loc := header.Get("Location")
	fmt.Fprintf(stderr, "demo: 40 more devices with \"mode\":\"async\": HTTP 202, Location %s, Retry-After %s s; polling (every second here)...\n",
		loc, header.Get("Retry-After"))
	var page struct {
		remediate.Summary
		Queued int `json:"queued"`
	}
	for follow := false; ; {
		url := loc
		if follow {
			url += "?follow=true"
		}
		status, _, raw, err = demoCall(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return fmt.Errorf("GET %s answered %d: %s", url, status, raw)
		}
		states := map[string]int{}
		for _, d := range page.Devices {
			if d.FollowUp != nil {
				states[d.FollowUp.State]++
			}
		}
		switch {
		case status == http.StatusAccepted:
			fmt.Fprintf(stderr, "demo: HTTP 202, %d devices queued\n", page.Queued)
		case !follow:
			fmt.Fprintf(stderr, "demo: HTTP %d, run %s; following the scripts (?follow=true)...\n", status, page.Status)
			follow = true
			continue
		case states[remediate.FollowPending] > 0:
			fmt.Fprintf(stderr, "demo: %d scripts still pending on their devices\n", states[remediate.FollowPending])
		default:
			fmt.Fprintf(stdout, "async: run %s %s: %d devices, %d triggered; scripts: %d no issue, %d remediated, %d remediation failed, %d script error\n",
				page.RunID, page.Status, page.Counts.Total, page.Counts.Succeeded, states[remediate.FollowNoIssue], states[remediate.FollowRemediated],
				states[remediate.FollowRemediationFailed], states[remediate.FollowScriptError])
			fmt.Fprintf(stdout, "the run as a page: %s?format=html&follow=true\n", loc)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func demoCall(ctx context.Context, method, url string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw, err
}

// demoRollouts sends two rollouts at once, of 40 devices each in waves of
// 25% and 100%, as a flow would: one with a script that never fails,
// which passes its gate, and one with a script that fails on 60% of the
// devices, which its gate halts after the first wave. It follows both to
// their final answers and prints a line for each.
func demoRollouts(ctx context.Context, base string, tenant *intunesim.Tenant, good, bad string, stdout, stderr io.Writer) error {
	var eligible []intunesim.Device
	for _, d := range tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" {
			eligible = append(eligible, d)
		}
	}
	fmt.Fprintf(stderr, "demo: two rollouts of 40 devices in waves of 25%% and 100%%, gate 80%% reported and 95%% succeeded, read every second...\n")
	// Both at once; their lines printed in order once both are final.
	var lines [2]string
	var errs [2]error
	var wg sync.WaitGroup
	for i, script := range []string{good, bad} {
		label := [...]string{"good", "bad"}[i]
		devs := eligible[200+40*i : 240+40*i]
		wg.Go(func() { lines[i], errs[i] = demoRollout(ctx, base, label, script, devs) })
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return err
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return nil
}

// demoRollout runs one rollout of script over devs and returns its line.
func demoRollout(ctx context.Context, base, label, script string, devs []intunesim.Device) (string, error) {
	req := remediate.Request{Rollout: &remediate.Rollout{Waves: []string{"25%", "100%"}, Gate: &remediate.GateSpec{Poll: "1s", Wait: "1m"}}}
	for _, d := range devs {
		req.ManagedDevices = append(req.ManagedDevices, remediate.Target{DeviceID: d.ID, ScriptPolicyID: script})
	}
	body, _ := json.Marshal(req)
	status, header, raw, err := demoCall(ctx, http.MethodPost, base+"/api/remediate", body)
	if err != nil {
		return "", err
	}
	if status != http.StatusAccepted {
		return "", fmt.Errorf("the rollout answered %d: %s", status, raw)
	}
	for status == http.StatusAccepted {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if status, _, raw, err = demoCall(ctx, http.MethodGet, header.Get("Location"), nil); err != nil {
			return "", err
		}
	}
	var page struct {
		remediate.Summary
		ResumeURL string `json:"resume_url"`
	}
	if err := json.Unmarshal(raw, &page); err != nil || page.Rollout == nil {
		return "", fmt.Errorf("the rollout's status answered %d: %s", status, raw)
	}
	w := page.Rollout.Waves[0]
	line := fmt.Sprintf("rollout (%s script): run %s %s: wave 1 %s (%d of %d reported, %.0f%% succeeded); %d of %d devices triggered",
		label, page.RunID, page.Status, w.Decision, w.Reported, w.Triggered, 100*w.SuccessShare, page.Counts.Succeeded, page.Counts.Total)
	if page.Status == remediate.StatusHalted {
		line += fmt.Sprintf(", %d not attempted (reason halted); POST %s to go on", page.Counts.NotAttempted, page.ResumeURL)
	}
	return line, nil
}
