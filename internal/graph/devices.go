package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-beta-sdk-go/devicemanagement"
	core "github.com/microsoftgraph/msgraph-sdk-go-core"

	"github.com/remediator/remediator/internal/intune"
)

// deviceFields is the $select of every device read.
var deviceFields = []string{"id", "deviceName", "operatingSystem", "osVersion", "joinType",
	"managementAgent", "managementState", "lastSyncDateTime", "azureADDeviceId"}

// Devices reads up to intune.MaxBatch devices in one $batch request. Each item
// succeeds or fails on its own (a 429 item carries its Retry-After); the
// returned error is for the batch request as a whole.
func (c *Client) Devices(ctx context.Context, ids []string) ([]intune.Lookup, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > intune.MaxBatch {
		return nil, fmt.Errorf("graph: %d devices in one batch, at most %d", len(ids), intune.MaxBatch)
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
	err := c.once(ctx, func(ctx context.Context) (*capture, error) {
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
	out := make([]intune.Lookup, len(ids))
	for i, id := range ids {
		out[i].ID = id
		item := resp.GetResponseById(itemIDs[i])
		if item == nil || item.GetStatus() == nil {
			out[i].Err = &intune.Error{Message: "no answer for this item in the batch response", Transport: true}
			continue
		}
		body, _ := json.Marshal(item.GetBody())
		status := int(*item.GetStatus())
		if status >= 300 {
			out[i].Err = intune.ItemError(status, item.GetHeaders(), body)
			continue
		}
		var d intune.Device
		if err := json.Unmarshal(body, &d); err != nil || d.ID == "" {
			out[i].Err = &intune.Error{Status: status, Message: "device body could not be read"}
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

// ListDevices reads one page of managed devices: the first page of the
// list filtered by filter (OData, may be empty) with at most top devices
// per page when next is empty, else the page at next (an @odata.nextLink).
func (c *Client) ListDevices(ctx context.Context, filter string, top int, next string) (intune.Page, error) {
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
			return intune.Page{}, fmt.Errorf("graph: building the device list request: %w", err)
		}
	} else {
		var err error
		if ri, err = nextPage(next); err != nil {
			return intune.Page{}, err
		}
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return intune.Page{}, err
	}
	var raw struct {
		Count    *int            `json:"@odata.count"`
		NextLink string          `json:"@odata.nextLink"`
		Value    []intune.Device `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return intune.Page{}, &intune.Error{Status: 200, Message: "device list could not be read: " + err.Error()}
	}
	p := intune.Page{Devices: raw.Value, Count: -1, NextLink: raw.NextLink}
	if raw.Count != nil {
		p.Count = *raw.Count
	}
	return p, nil
}
