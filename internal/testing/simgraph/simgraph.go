// Package simgraph is a Graph client for tests: the remediation engine's
// Graph interface over plain net/http, for the simulator (intunesim) on
// loopback. The domain's tests (remediate, runs, httpapi, awslambda) use
// it so that they do not link the Graph SDK, whose models package takes
// minutes and gigabytes to compile; internal/graph's contract test holds
// it to the real client's answers, request for request.
package simgraph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/remediator/remediator/internal/intune"
)

// deviceFields is the $select of every device read, as internal/graph
// sends it.
const deviceFields = "id,deviceName,operatingSystem,osVersion,joinType,managementAgent,managementState,lastSyncDateTime,azureADDeviceId"

// Client calls a simulated Graph. It is safe for concurrent use.
type Client struct {
	base    string
	http    *http.Client
	timeout time.Duration
	calls   atomic.Int64
}

// New returns a Client for the Graph at base (the simulator's URL); each
// HTTP attempt is bounded by timeout (30 s when zero).
func New(base string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = intune.DefaultCallTimeout
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return &Client{
		base: strings.TrimSuffix(base, "/"), timeout: timeout,
		http: &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// Calls is the number of HTTP requests sent so far ($batch counts once).
func (c *Client) Calls() int64 { return c.calls.Load() }

// send makes one request and returns the body of a 2xx answer; any other
// outcome is an *intune.Error as internal/graph makes it.
func (c *Client) send(ctx context.Context, method, u string, body any) ([]byte, *intune.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.calls.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		e := &intune.Error{Transport: true, Err: err, Message: "no response: " + err.Error()}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			e.Message = "no response before the call timed out"
		}
		return nil, nil, e
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, &intune.Error{Transport: true, Err: err, Message: "no response: " + err.Error()}
	}
	r := &intune.Response{Status: resp.StatusCode, RequestID: resp.Header.Get("request-id")}
	if resp.StatusCode < 300 {
		return b, r, nil
	}
	e := &intune.Error{Status: resp.StatusCode, RequestID: r.RequestID, ClientRequestID: resp.Header.Get("client-request-id"), RetryAfter: resp.Header.Get("Retry-After")}
	switch {
	case resp.StatusCode < 400:
		e.Message = fmt.Sprintf("Graph answered %d (a redirect, not followed)", resp.StatusCode)
	case !strings.Contains(resp.Header.Get("Content-Type"), "json"):
		e.Message = "error response with a body that is not JSON (" + resp.Header.Get("Content-Type") + ")"
		if snippet := strings.TrimSpace(string(b)); snippet != "" && len(snippet) <= 200 {
			e.Message += ": " + snippet
		}
	default:
		fill(e, b)
	}
	return nil, nil, e
}

// fill reads a Graph error body into e, as internal/graph does.
func fill(e *intune.Error, body []byte) {
	f := intune.ItemError(e.Status, nil, body)
	e.Code, e.Message = f.Code, f.Message
	if e.RequestID == "" {
		e.RequestID = f.RequestID
	}
}

// Trigger asks Intune to run scriptID on deviceID now.
func (c *Client) Trigger(ctx context.Context, coll intune.Collection, deviceID, scriptID string) (intune.Response, error) {
	path := "managedDevices"
	if coll == intune.CoManagedDevices {
		path = "comanagedDevices"
	}
	_, r, err := c.send(ctx, http.MethodPost, c.base+"/deviceManagement/"+path+"/"+url.PathEscape(deviceID)+"/initiateOnDemandProactiveRemediation",
		map[string]string{"scriptPolicyId": scriptID})
	if err != nil {
		return intune.Response{}, err
	}
	return *r, nil
}

// Devices reads up to intune.MaxBatch devices in one $batch request.
func (c *Client) Devices(ctx context.Context, ids []string) ([]intune.Lookup, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > intune.MaxBatch {
		return nil, fmt.Errorf("simgraph: %d devices in one batch, at most %d", len(ids), intune.MaxBatch)
	}
	type item struct {
		ID     string `json:"id"`
		Method string `json:"method"`
		URL    string `json:"url"`
	}
	reqs := make([]item, len(ids))
	for i, id := range ids {
		reqs[i] = item{ID: strconv.Itoa(i + 1), Method: "GET", URL: "/deviceManagement/managedDevices/" + url.PathEscape(id) + "?%24select=" + deviceFields + ",deviceActionResults"}
	}
	body, _, err := c.send(ctx, http.MethodPost, c.base+"/$batch", map[string]any{"requests": reqs})
	if err != nil {
		return nil, err
	}
	var raw struct {
		Responses []struct {
			ID      string            `json:"id"`
			Status  *int              `json:"status"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &intune.Error{Status: 200, Message: "batch response could not be read: " + err.Error()}
	}
	out := make([]intune.Lookup, len(ids))
	for i, id := range ids {
		out[i] = intune.Lookup{ID: id, Err: &intune.Error{Message: "no answer for this item in the batch response", Transport: true}}
		for _, r := range raw.Responses {
			if r.ID != strconv.Itoa(i+1) || r.Status == nil {
				continue
			}
			out[i].Err = nil
			if *r.Status >= 300 {
				out[i].Err = intune.ItemError(*r.Status, r.Headers, r.Body)
				break
			}
			var d intune.Device
			if json.Unmarshal(r.Body, &d) != nil || d.ID == "" {
				out[i].Err = &intune.Error{Status: *r.Status, Message: "device body could not be read"}
				break
			}
			out[i].Device = &d
			break
		}
	}
	return out, nil
}

// get reads the JSON at u (or at next, an @odata.nextLink, when set) into v.
func (c *Client) get(ctx context.Context, u, next, what string, v any) error {
	if next != "" {
		p, err := url.Parse(next)
		if err != nil || !strings.HasPrefix(p.Scheme, "http") {
			return fmt.Errorf("graph: bad @odata.nextLink %q", next)
		}
		u = next
	}
	body, _, err := c.send(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &intune.Error{Status: 200, Message: what + " could not be read: " + err.Error()}
	}
	return nil
}

// ListDevices reads one page of managed devices.
func (c *Client) ListDevices(ctx context.Context, filter string, top int, next string) (intune.Page, error) {
	q := url.Values{"$select": {deviceFields}, "$count": {"true"}}
	if filter != "" {
		q.Set("$filter", filter)
	}
	if top > 0 {
		q.Set("$top", strconv.Itoa(top))
	}
	var raw struct {
		Count    *int            `json:"@odata.count"`
		NextLink string          `json:"@odata.nextLink"`
		Value    []intune.Device `json:"value"`
	}
	if err := c.get(ctx, c.base+"/deviceManagement/managedDevices?"+q.Encode(), next, "device list", &raw); err != nil {
		return intune.Page{}, err
	}
	p := intune.Page{Devices: raw.Value, Count: -1, NextLink: raw.NextLink}
	if raw.Count != nil {
		p.Count = *raw.Count
	}
	return p, nil
}

// GroupDevices reads one page of an Entra group's transitive device
// members.
func (c *Client) GroupDevices(ctx context.Context, groupID, next string) (intune.GroupPage, error) {
	var raw struct {
		NextLink string               `json:"@odata.nextLink"`
		Value    []intune.GroupMember `json:"value"`
	}
	u := c.base + "/groups/" + url.PathEscape(groupID) + "/transitiveMembers/microsoft.graph.device?%24select=id,deviceId,displayName&%24top=999"
	if err := c.get(ctx, u, next, "group members", &raw); err != nil {
		return intune.GroupPage{}, err
	}
	return intune.GroupPage{Members: raw.Value, NextLink: raw.NextLink}, nil
}

// Script reads a deviceHealthScript.
func (c *Client) Script(ctx context.Context, id string) (intune.Script, error) {
	var s intune.Script
	if err := c.get(ctx, c.base+"/deviceManagement/deviceHealthScripts/"+url.PathEscape(id), "", "script body", &s); err != nil {
		return intune.Script{}, err
	}
	if s.ID == "" {
		return intune.Script{}, &intune.Error{Status: 200, Message: "script body could not be read"}
	}
	return s, nil
}

// RunStates reads one page of a script's deviceRunStates with each row's
// managed device id.
func (c *Client) RunStates(ctx context.Context, scriptID, next string) (intune.RunStatePage, error) {
	var raw struct {
		NextLink string            `json:"@odata.nextLink"`
		Value    []intune.RunState `json:"value"`
	}
	u := c.base + "/deviceManagement/deviceHealthScripts/" + url.PathEscape(scriptID) + "/deviceRunStates?%24expand=managedDevice(%24select%3Did)"
	if err := c.get(ctx, u, next, "run states", &raw); err != nil {
		return intune.RunStatePage{}, err
	}
	return intune.RunStatePage{States: raw.Value, NextLink: raw.NextLink}, nil
}
