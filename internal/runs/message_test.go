package runs

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDecodeMessageInEveryFormTheHostsSend checks that the one decoder
// reads a work item as the queue holds it and as the Functions host passes
// it on: the object, base64, and both double-encoded as a JSON string (the
// host's JsonConvert.SerializeObject of a string trigger value).
func TestDecodeMessageInEveryFormTheHostsSend(t *testing.T) {
	t.Parallel()
	m := Message{RunID: "r1", Chunk: 3, Items: []WorkItem{{Index: 7, DeviceID: "d", ScriptID: "s", Collection: "managedDevices"}}}
	b64, err := m.Encode()
	require.NoError(t, err)
	obj, _ := json.Marshal(m)
	quote := func(s string) string { q, _ := json.Marshal(s); return string(q) }
	for name, raw := range map[string]string{
		"object":                string(obj),
		"base64":                b64,
		"base64 in a string":    quote(b64),
		"object in a string":    quote(string(obj)),
		"object in two strings": quote(quote(string(obj))),
	} {
		got, err := DecodeMessage([]byte(raw))
		if assert.NoError(t, err, name) {
			assert.Equal(t, m, got, name)
		}
	}
	for name, raw := range map[string]string{
		"not JSON or base64": "%%%",
		"no devices":         `{"run":"r1","chunk":0,"items":[]}`,
		"no run":             `{"chunk":0,"items":[{"i":1}]}`,
		"wrapped forever":    quote(quote(quote(quote(quote(string(obj)))))),
	} {
		_, err := DecodeMessage([]byte(raw))
		assert.Error(t, err, name)
	}
}
