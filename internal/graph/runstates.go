package graph

import (
	"context"
	"encoding/json"
	"fmt"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-beta-sdk-go/devicemanagement"

	"github.com/remediator/remediator/internal/intune"
)

// RunStates reads one page of a script's deviceRunStates with each row's
// managed device id: the first page when next is empty, else the page at
// next. One list serves a whole run, where per-device reads would cost a
// call per device.
func (c *Client) RunStates(ctx context.Context, scriptID, next string) (intune.RunStatePage, error) {
	var ri *abs.RequestInformation
	var err error
	if next == "" {
		ri, err = c.dm.DeviceHealthScripts().ByDeviceHealthScriptId(scriptID).DeviceRunStates().ToGetRequestInformation(ctx,
			&devicemanagement.DeviceHealthScriptsItemDeviceRunStatesRequestBuilderGetRequestConfiguration{
				QueryParameters: &devicemanagement.DeviceHealthScriptsItemDeviceRunStatesRequestBuilderGetQueryParameters{
					Expand: []string{"managedDevice($select=id)"},
				}})
		if err != nil {
			return intune.RunStatePage{}, fmt.Errorf("graph: building the run states request: %w", err)
		}
	} else if ri, err = nextPage(next); err != nil {
		return intune.RunStatePage{}, err
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return intune.RunStatePage{}, err
	}
	var raw struct {
		NextLink string            `json:"@odata.nextLink"`
		Value    []intune.RunState `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return intune.RunStatePage{}, &intune.Error{Status: 200, Message: "run states could not be read: " + err.Error()}
	}
	return intune.RunStatePage{States: raw.Value, NextLink: raw.NextLink}, nil
}
