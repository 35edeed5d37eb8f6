package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
)

// Script is what remediator checks of a remediation script package.
type Script struct {
	ID                   string    `json:"id"`
	DisplayName          string    `json:"displayName"`
	Version              string    `json:"version"`
	Type                 string    `json:"deviceHealthScriptType"`
	LastModifiedDateTime time.Time `json:"lastModifiedDateTime"`
}

// Script reads a deviceHealthScript. A missing script is an *Error with
// status 404.
func (c *Client) Script(ctx context.Context, id string) (Script, error) {
	ri, err := c.dm.DeviceHealthScripts().ByDeviceHealthScriptId(id).ToGetRequestInformation(ctx, nil)
	if err != nil {
		return Script{}, fmt.Errorf("graph: building the script request: %w", err)
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return Script{}, err
	}
	var s Script
	if err := json.Unmarshal(body, &s); err != nil || s.ID == "" {
		return Script{}, &Error{Status: 200, Message: "script body could not be read"}
	}
	return s, nil
}

// GroupMember is a device that is a transitive member of an Entra group.
type GroupMember struct {
	// AzureADDeviceID is the Entra device id (managedDevice.azureADDeviceId).
	AzureADDeviceID string `json:"deviceId"`
	DisplayName     string `json:"displayName"`
}

// GroupPage is one page of a group's device members.
type GroupPage struct {
	Members  []GroupMember
	NextLink string
}

// GroupDevices reads one page of the transitive device members of an Entra
// group: the first page when next is empty, else the page at next.
func (c *Client) GroupDevices(ctx context.Context, groupID, next string) (GroupPage, error) {
	var ri *abs.RequestInformation
	if next == "" {
		ri = abs.NewRequestInformationWithMethodAndUrlTemplateAndPathParameters(abs.GET,
			"{+baseurl}/groups/{group%2Did}/transitiveMembers/microsoft.graph.device{?%24select,%24top}",
			map[string]string{"baseurl": c.adapter.GetBaseUrl(), "group%2Did": groupID})
		ri.QueryParameters["%24select"] = "id,deviceId,displayName"
		ri.QueryParameters["%24top"] = "999"
		ri.Headers.Add("Accept", "application/json")
	} else {
		var err error
		if ri, err = nextPage(next); err != nil {
			return GroupPage{}, err
		}
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return GroupPage{}, err
	}
	var raw struct {
		NextLink string        `json:"@odata.nextLink"`
		Value    []GroupMember `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return GroupPage{}, &Error{Status: 200, Message: "group members could not be read: " + err.Error()}
	}
	return GroupPage{Members: raw.Value, NextLink: raw.NextLink}, nil
}
