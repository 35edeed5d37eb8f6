package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/testing/azurefake"
)

// The shared budget under faults (issue 22): each benchmark runs one
// tenant's synchronous runs through several processes on Azurite, with
// one fault, and reports windows over the limit, 429s, the share of the
// ceiling used and storage operations per trigger.

// processRuns has each worker run perProcess devices of the fleet's tenant
// synchronously at once, and reports the ratio to the ceiling.
func (fl *fleet) processRuns(b *testing.B, perProcess int, during func()) {
	start := time.Now()
	var wg sync.WaitGroup
	for i, w := range fl.workers {
		wg.Go(func() { fl.run(b, w, fl.tenants[0], fl.request(fl.eligible(i*perProcess, perProcess), ""), false) })
	}
	if during != nil {
		during()
	}
	wg.Wait()
	triggers := len(fl.workers) * perProcess // remediator's (another client may add its own)
	require.GreaterOrEqual(b, fl.sim.Counters().Triggers, triggers)
	b.ReportMetric(triggerRate(fl.sim.Server)/benchCeiling, "ratio_to_ceiling")
	b.ReportMetric(time.Since(start).Seconds(), "s_to_last_answer")
	fl.measure(b, triggers)
}

// BenchmarkFrozenProcess: one of three processes is stopped (SIGSTOP) for
// 12 s mid-run; when it resumes, its waiting calls go out at the pace.
func BenchmarkFrozenProcess(b *testing.B) {
	for range b.N {
		fl := newFleet(b, 1, 2000)
		fl.processRuns(b, 250, func() {
			time.Sleep(3 * time.Second)
			pid := fl.workers[1].cmd.Process.Pid
			require.NoError(b, syscall.Kill(pid, syscall.SIGSTOP))
			time.Sleep(12 * time.Second)
			require.NoError(b, syscall.Kill(pid, syscall.SIGCONT))
		})
	}
}

// viaProxy rewrites an Azurite connection string's endpoints to go
// through a proxy that delays every storage operation.
func viaProxy(b *testing.B, delay time.Duration) func(string) string {
	return func(conn string) string {
		var parts []string
		for _, kv := range strings.Split(conn, ";") {
			k, v, ok := strings.Cut(kv, "=")
			if ok && (k == "TableEndpoint" || k == "QueueEndpoint" || k == "BlobEndpoint") {
				u, err := url.Parse(v)
				require.NoError(b, err)
				u.Host = newFaultyProxy(b, u.Host, delay).addr
				v = u.String()
			}
			parts = append(parts, k+"="+v)
		}
		return strings.Join(parts, ";")
	}
}

// BenchmarkStorageLatency: 150 ms added to every storage operation, with 3
// and with 8 processes.
func BenchmarkStorageLatency(b *testing.B) {
	for _, processes := range []int{3, 8} {
		b.Run(fmt.Sprintf("processes=%d", processes), func(b *testing.B) {
			for range b.N {
				fl := newFleetVia(b, 1, 3000, processes, viaProxy(b, 150*time.Millisecond))
				fl.processRuns(b, 750/processes, nil)
			}
		})
	}
}

// BenchmarkOtherClient: another automation sends a quarter of the
// tenant's limit with the same app registration; remediator learns from
// the 429s that brings, and they stop.
func BenchmarkOtherClient(b *testing.B) {
	for range b.N {
		fl := newFleet(b, 1, 3000)
		token := clientToken(b, fl.entra, fl.tenants[0])
		ctx, cancel := context.WithCancel(context.Background())
		var other sync.WaitGroup
		other.Go(func() {
			devs := fl.eligible(800, 900)
			tick := time.NewTicker(time.Duration(float64(time.Second) / (benchCeiling / 4)))
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				req, _ := http.NewRequest("POST", fl.sim.URL+"/deviceManagement/managedDevices/"+devs[i%len(devs)].ID+"/initiateOnDemandProactiveRemediation",
					strings.NewReader(`{"scriptPolicyId":"`+fl.script+`"}`))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_ = resp.Body.Close()
				}
			}
		})
		start := time.Now()
		fl.processRuns(b, 250, nil)
		cancel()
		other.Wait()
		var first, last time.Time
		for _, r := range fl.sim.Records() {
			if r.Status == 429 && strings.Contains(r.App, "|") && r.Header.Get("Authorization") != "Bearer "+token {
				if first.IsZero() {
					first = r.Time
				}
				last = r.Time
			}
		}
		if !first.IsZero() {
			b.ReportMetric(last.Sub(start).Seconds(), "s_to_last_429")
		}
	}
}

// clientToken is a token of the fleet's app in tenant, as another client
// of the same app registration would hold.
func clientToken(b *testing.B, entra *azurefake.Entra, tenant string) string {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {appID}, "client_secret": {appSecret}, "scope": {"https://graph.microsoft.com/.default"}}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: azurefake.Pool(entra.Server), MinVersion: tls.VersionTLS12}}}
	resp, err := client.PostForm(entra.URL+"/"+tenant+"/oauth2/v2.0/token", form)
	require.NoError(b, err)
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(b, json.NewDecoder(resp.Body).Decode(&tok))
	require.NotEmpty(b, tok.AccessToken)
	return tok.AccessToken
}

// faultyProxy forwards TCP connections to target, holding every chunk a
// client sends for delay (each storage operation takes that much longer),
// or, as set, refuses them (closes at once) or hangs them (holds them
// open, forwarding nothing): storage slow, unreachable, unresponsive.
type faultyProxy struct {
	addr  string
	delay time.Duration
	mu    sync.Mutex
	mode  string // "", "refuse" or "hang"
}

func (p *faultyProxy) get() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

func (p *faultyProxy) set(mode string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = mode
}

func newFaultyProxy(b *testing.B, target string, delay time.Duration) *faultyProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	b.Cleanup(func() { _ = ln.Close() })
	p := &faultyProxy{addr: ln.Addr().String(), delay: delay}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer func() { _ = up.Close() }()
				go func() { _, _ = io.Copy(c, up) }()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					switch p.get() {
					case "refuse":
						return
					case "hang":
						for p.get() == "hang" {
							time.Sleep(100 * time.Millisecond)
						}
						return
					}
					if n > 0 {
						time.Sleep(p.delay)
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// BenchmarkStorageOutage: mid-run, storage refuses connections for 15 s,
// then hangs them for 15 s, then answers again; the processes keep to
// their outage share (the rate over the processes storage last saw) and
// never go over the limit going out or coming back.
func BenchmarkStorageOutage(b *testing.B) {
	for range b.N {
		var proxy *faultyProxy
		via := func(conn string) string {
			var parts []string
			for _, kv := range strings.Split(conn, ";") {
				k, v, ok := strings.Cut(kv, "=")
				if ok && k == "TableEndpoint" {
					u, err := url.Parse(v)
					require.NoError(b, err)
					proxy = newFaultyProxy(b, u.Host, 0)
					u.Host = proxy.addr
					v = u.String()
				}
				parts = append(parts, k+"="+v)
			}
			return strings.Join(parts, ";")
		}
		fl := newFleetVia(b, 1, 3000, 3, via, "STORAGE_CALL_TIMEOUT=1s")
		fl.processRuns(b, 400, func() {
			time.Sleep(5 * time.Second)
			proxy.set("refuse")
			time.Sleep(15 * time.Second)
			proxy.set("hang")
			time.Sleep(15 * time.Second)
			proxy.set("")
		})
	}
}

// readLoad is the most reads of tenant in any window (each $batch item
// counts, as Intune counts them), the 429s among them, and their rate
// from the first to the last.
func readLoad(sim *intunesim.Server, tenant string, window time.Duration) (most, throttled, reads int, perSecond float64) {
	var times []time.Time
	for _, r := range sim.Records() {
		if intunesim.TenantOf(r.App) != tenant || r.Method != "GET" {
			continue
		}
		times = append(times, r.Time)
		if r.Status == 429 {
			throttled++
		}
	}
	if len(times) > 1 {
		slices.SortFunc(times, time.Time.Compare)
		perSecond = float64(len(times)-1) / times[len(times)-1].Sub(times[0]).Seconds()
	}
	return intunesim.MaxInWindow(times, window), throttled, len(times), perSecond
}

// BenchmarkPagingProcesses: four processes each resolve a filter over the
// tenant's device list twice (dry runs: reads only, pages of 100), with
// Intune's read limit compressed to 60 per 10 s and remediator set to 95%
// of it: the shared read budget keeps the four together under it.
func BenchmarkPagingProcesses(b *testing.B) {
	const readLimit = 60
	for range b.N {
		fl := newFleetWith(b, 1, 3000, 4, nil, func(o *intunesim.Options) {
			o.ReadLimit, o.TenantReadLimit, o.PageSize = readLimit, 2*readLimit, 100
		}, "GRAPH_READ_RATE=5.7")
		body := fmt.Sprintf(`{"targets":[{"script_policy_id":%q,"filter":"operatingSystem eq 'Windows'"}],"dry_run":true,"validate_device_exists":false}`, fl.script)
		start := time.Now()
		var wg sync.WaitGroup
		for _, w := range fl.workers {
			wg.Go(func() {
				for range 2 {
					fl.run(b, w, fl.tenants[0], body, false)
				}
			})
		}
		wg.Wait()
		most, throttled, reads, perSecond := readLoad(fl.sim.Server, fl.tenants[0], benchWindow)
		if most > readLimit {
			b.Logf("%d reads in a window (limit %d)", most, readLimit)
		}
		b.ReportMetric(float64(max(0, most-readLimit)), "windows_over_limit")
		b.ReportMetric(float64(throttled), "throttled")
		b.ReportMetric(perSecond/(readLimit/benchWindow.Seconds()), "ratio_to_ceiling")
		b.ReportMetric(time.Since(start).Seconds(), "s_to_last_answer")
		b.ReportMetric(float64(reads), "reads")
		b.ReportMetric(float64(fl.measure(b, 0))/float64(reads), "storage_ops_per_read")
	}
}
