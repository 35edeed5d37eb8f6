package runs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// WorkItem is one device of a chunk: its index in the run's summary and what
// to trigger.
type WorkItem struct {
	Index      int    `json:"i"`
	DeviceID   string `json:"d"`
	ScriptID   string `json:"s"`
	Collection string `json:"c"`
}

// Message is the body of a queue message: work items of one chunk of one
// run.
type Message struct {
	RunID string     `json:"run"`
	Chunk int        `json:"chunk"`
	Items []WorkItem `json:"items"`
	// Gate, for a rollout, asks for the gate of that wave (1-based) to be
	// read; such a message carries no devices.
	Gate int `json:"gate,omitempty"`
}

// Encode is the text of m on the queue: base64 of its JSON, the encoding
// the Functions queue trigger expects by default.
func (m Message) Encode() (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("runs: encoding the work item: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// maxDecodeDepth bounds the layers of JSON strings and base64 a message
// may be wrapped in.
const maxDecodeDepth = 4

// DecodeMessage reads a work item in any form a host hands it over: the
// JSON object; the base64 the queue holds (a host that did not decode it);
// or either of these inside a JSON string, once or more (the Functions host
// passes a string trigger value through JsonConvert.SerializeObject, so
// "{...}" arrives as "\"{...}\"").
func DecodeMessage(raw []byte) (Message, error) {
	for range maxDecodeDepth {
		t := strings.TrimSpace(string(raw))
		var s string
		switch {
		case strings.HasPrefix(t, "{"):
			var m Message
			if err := json.Unmarshal([]byte(t), &m); err != nil {
				return Message{}, fmt.Errorf("reading the work item: %w", err)
			}
			if m.RunID == "" || len(m.Items) == 0 && m.Gate <= 0 {
				return Message{}, errors.New("reading the work item: no run or no devices")
			}
			return m, nil
		case strings.HasPrefix(t, `"`) && json.Unmarshal([]byte(t), &s) == nil:
			raw = []byte(s)
		default:
			b, err := base64.StdEncoding.DecodeString(t)
			if err != nil {
				return Message{}, errors.New("reading the work item: neither JSON nor base64")
			}
			raw = b
		}
	}
	return Message{}, errors.New("reading the work item: wrapped too deeply")
}
