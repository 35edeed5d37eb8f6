package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-beta-sdk-go/devicemanagement"
)

// RunState is one device's deviceHealthScriptDeviceState: what the
// detection and remediation scripts last did on it.
type RunState struct {
	DetectionState                       string    `json:"detectionState"`
	RemediationState                     string    `json:"remediationState"`
	LastStateUpdateDateTime              time.Time `json:"lastStateUpdateDateTime"`
	PreRemediationDetectionScriptOutput  string    `json:"preRemediationDetectionScriptOutput"`
	PreRemediationDetectionScriptError   string    `json:"preRemediationDetectionScriptError"`
	RemediationScriptError               string    `json:"remediationScriptError"`
	PostRemediationDetectionScriptOutput string    `json:"postRemediationDetectionScriptOutput"`
	PostRemediationDetectionScriptError  string    `json:"postRemediationDetectionScriptError"`
	ManagedDevice                        struct {
		ID string `json:"id"`
	} `json:"managedDevice"`
}

// RunStatePage is one page of a script's run states.
type RunStatePage struct {
	States   []RunState
	NextLink string
}

// RunStates reads one page of a script's deviceRunStates with each row's
// managed device id: the first page when next is empty, else the page at
// next. One list serves a whole run, where per-device reads would cost a
// call per device.
func (c *Client) RunStates(ctx context.Context, scriptID, next string) (RunStatePage, error) {
	var ri *abs.RequestInformation
	var err error
	if next == "" {
		ri, err = c.dm.DeviceHealthScripts().ByDeviceHealthScriptId(scriptID).DeviceRunStates().ToGetRequestInformation(ctx,
			&devicemanagement.DeviceHealthScriptsItemDeviceRunStatesRequestBuilderGetRequestConfiguration{
				QueryParameters: &devicemanagement.DeviceHealthScriptsItemDeviceRunStatesRequestBuilderGetQueryParameters{
					Expand: []string{"managedDevice($select=id)"},
				}})
		if err != nil {
			return RunStatePage{}, fmt.Errorf("graph: building the run states request: %w", err)
		}
	} else if ri, err = nextPage(next); err != nil {
		return RunStatePage{}, err
	}
	body, err := c.sendBytes(ctx, ri)
	if err != nil {
		return RunStatePage{}, err
	}
	var raw struct {
		NextLink string     `json:"@odata.nextLink"`
		Value    []RunState `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return RunStatePage{}, &Error{Status: 200, Message: "run states could not be read: " + err.Error()}
	}
	return RunStatePage{States: raw.Value, NextLink: raw.NextLink}, nil
}
