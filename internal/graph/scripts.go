package graph

import (
	"context"
	"encoding/json"
	"fmt"

	abs "github.com/microsoft/kiota-abstractions-go"

	"github.com/remediator/remediator/internal/intune"
)

// Script reads a deviceHealthScript. A missing script is an *intune.Error with
// status 404.
func (c *Client) Script(ctx context.Context, id string) (intune.Script, error) {
	ri, err := c.dm.DeviceHealthScripts().ByDeviceHealthScriptId(id).ToGetRequestInformation(ctx, nil)
	if err != nil {
		return intune.Script{}, fmt.Errorf("graph: building the script request: %w", err)
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return intune.Script{}, err
	}
	var s intune.Script
	if err := json.Unmarshal(body, &s); err != nil || s.ID == "" {
		return intune.Script{}, &intune.Error{Status: 200, Message: "script body could not be read"}
	}
	return s, nil
}

// GroupDevices reads one page of the transitive device members of an Entra
// group: the first page when next is empty, else the page at next.
func (c *Client) GroupDevices(ctx context.Context, groupID, next string) (intune.GroupPage, error) {
	var ri *abs.RequestInformation
	if next == "" {
		// The request the SDK's groups builder
		// (groups.ByGroupId().TransitiveMembers().GraphDevice()) makes, whose
		// template spells the cast graph.device (Graph accepts both forms);
		// written here because importing the SDK's groups package, a second
		// generated package of 1,700 files, would add minutes to every cold
		// build and megabytes to the binary for this one request.
		ri = abs.NewRequestInformationWithMethodAndUrlTemplateAndPathParameters(abs.GET,
			"{+baseurl}/groups/{group%2Did}/transitiveMembers/microsoft.graph.device{?%24select,%24top}",
			map[string]string{"baseurl": c.adapter.GetBaseUrl(), "group%2Did": groupID})
		ri.QueryParameters["%24select"] = "id,deviceId,displayName"
		ri.QueryParameters["%24top"] = "999"
		ri.Headers.Add("Accept", "application/json")
	} else {
		var err error
		if ri, err = nextPage(next); err != nil {
			return intune.GroupPage{}, err
		}
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return intune.GroupPage{}, err
	}
	var raw struct {
		NextLink string               `json:"@odata.nextLink"`
		Value    []intune.GroupMember `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return intune.GroupPage{}, &intune.Error{Status: 200, Message: "group members could not be read: " + err.Error()}
	}
	return intune.GroupPage{Members: raw.Value, NextLink: raw.NextLink}, nil
}
