package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-beta-sdk-go/devicemanagement"
	core "github.com/microsoftgraph/msgraph-sdk-go-core"
)

// Device holds the managed-device properties remediator decides on.
type Device struct {
	ID               string    `json:"id"`
	DeviceName       string    `json:"deviceName"`
	OperatingSystem  string    `json:"operatingSystem"`
	OSVersion        string    `json:"osVersion"`
	JoinType         string    `json:"joinType"`
	ManagementAgent  string    `json:"managementAgent"`
	ManagementState  string    `json:"managementState"`
	LastSyncDateTime time.Time `json:"lastSyncDateTime"`
	AzureADDeviceID  string    `json:"azureADDeviceId"`
	// ActionResults are the device's remote actions as Intune records
	// them (only read by single-device lookups).
	ActionResults []ActionResult `json:"deviceActionResults,omitempty"`
}

// ActionResult is one deviceActionResult of a managed device. Intune keeps
// the last action of each kind.
type ActionResult struct {
	ActionName    string    `json:"actionName"`
	ActionState   string    `json:"actionState"`
	StartDateTime time.Time `json:"startDateTime"`
}

// OnDemandRemediationSince reports whether Intune recorded an on-demand
// remediation of the device started at or after t. The exact actionName
// Intune uses is not documented (community reports differ), so any action
// named like a remediation counts.
func (d *Device) OnDemandRemediationSince(t time.Time) bool {
	for _, a := range d.ActionResults {
		if strings.Contains(strings.ToLower(a.ActionName), "remediation") && !a.StartDateTime.Before(t) {
			return true
		}
	}
	return false
}

// deviceFields is the $select of every device read.
var deviceFields = []string{"id", "deviceName", "operatingSystem", "osVersion", "joinType",
	"managementAgent", "managementState", "lastSyncDateTime", "azureADDeviceId"}

// MaxBatch is Graph's limit of requests in one $batch.
const MaxBatch = 20

// Lookup is the answer for one device of a $batch lookup: the device, or
// Err (404 for a device that does not exist).
type Lookup struct {
	ID     string
	Device *Device
	Err    *Error
}

// Devices reads up to MaxBatch devices in one $batch request. Each item
// succeeds or fails on its own (a 429 item carries its Retry-After); the
// returned error is for the batch request as a whole.
func (c *Client) Devices(ctx context.Context, ids []string) ([]Lookup, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > MaxBatch {
		return nil, fmt.Errorf("graph: %d devices in one batch, at most %d", len(ids), MaxBatch)
	}
	batch := core.NewBatchRequest(c.adapter)
	itemIDs := make([]string, len(ids))
	cfg := &devicemanagement.ManagedDevicesManagedDeviceItemRequestBuilderGetRequestConfiguration{
		QueryParameters: &devicemanagement.ManagedDevicesManagedDeviceItemRequestBuilderGetQueryParameters{Select: append(deviceFields[:len(deviceFields):len(deviceFields)], "deviceActionResults")},
	}
	for i, id := range ids {
		ri, err := c.dm.ManagedDevices().ByManagedDeviceId(id).ToGetRequestInformation(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("graph: building the lookup of %s: %w", id, err)
		}
		item, err := batch.AddBatchRequestStep(*ri)
		if err != nil {
			return nil, fmt.Errorf("graph: adding %s to the batch: %w", id, err)
		}
		itemIDs[i] = deref(item.GetId())
	}
	var resp core.BatchResponse
	err := c.withReauth(ctx, func(ctx context.Context) (*capture, error) {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		ctx, capt := withCapture(ctx)
		var err error
		if resp, err = batch.Send(ctx, c.adapter); err != nil {
			return capt, toError(ctx, err, capt)
		}
		return capt, nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Lookup, len(ids))
	for i, id := range ids {
		out[i].ID = id
		item := resp.GetResponseById(itemIDs[i])
		if item == nil || item.GetStatus() == nil {
			out[i].Err = &Error{Message: "no answer for this item in the batch response", Transport: true}
			continue
		}
		body, _ := json.Marshal(item.GetBody())
		status := int(*item.GetStatus())
		if status >= 300 {
			out[i].Err = itemError(status, item.GetHeaders(), body)
			continue
		}
		var d Device
		if err := json.Unmarshal(body, &d); err != nil || d.ID == "" {
			out[i].Err = &Error{Status: status, Message: "device body could not be read"}
			continue
		}
		out[i].Device = &d
	}
	return out, nil
}

// nextPage is the request for an @odata.nextLink (an absolute URL).
func nextPage(next string) (*abs.RequestInformation, error) {
	u, err := url.Parse(next)
	if err != nil || !strings.HasPrefix(u.Scheme, "http") {
		return nil, fmt.Errorf("graph: bad @odata.nextLink %q", next)
	}
	ri := abs.NewRequestInformation()
	ri.Method = abs.GET
	ri.SetUri(*u)
	ri.Headers.Add("Accept", "application/json")
	return ri, nil
}

// Page is one page of a device list.
type Page struct {
	Devices []Device
	// Count is @odata.count, the size of the whole filtered list (-1 when
	// the service did not say).
	Count int
	// NextLink is the absolute URL of the next page, "" on the last.
	NextLink string
}

// ListDevices reads one page of managed devices: the first page of the
// list filtered by filter (OData, may be empty) with at most top devices
// per page when next is empty, else the page at next (an @odata.nextLink).
func (c *Client) ListDevices(ctx context.Context, filter string, top int, next string) (Page, error) {
	var ri *abs.RequestInformation
	if next == "" {
		count := true
		q := &devicemanagement.ManagedDevicesRequestBuilderGetQueryParameters{Select: deviceFields, Count: &count}
		if filter != "" {
			q.Filter = &filter
		}
		if top > 0 {
			t := int32(top)
			q.Top = &t
		}
		var err error
		ri, err = c.dm.ManagedDevices().ToGetRequestInformation(ctx, &devicemanagement.ManagedDevicesRequestBuilderGetRequestConfiguration{QueryParameters: q})
		if err != nil {
			return Page{}, fmt.Errorf("graph: building the device list request: %w", err)
		}
	} else {
		var err error
		if ri, err = nextPage(next); err != nil {
			return Page{}, err
		}
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return Page{}, err
	}
	var raw struct {
		Count    *int     `json:"@odata.count"`
		NextLink string   `json:"@odata.nextLink"`
		Value    []Device `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Page{}, &Error{Status: 200, Message: "device list could not be read: " + err.Error()}
	}
	p := Page{Devices: raw.Value, Count: -1, NextLink: raw.NextLink}
	if raw.Count != nil {
		p.Count = *raw.Count
	}
	return p, nil
}
