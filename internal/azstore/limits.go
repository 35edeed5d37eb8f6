package azstore

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// The limits of an Azure Table entity ("Understanding the Table service
// data model", Azure Storage REST reference): at most 252 properties of
// its own (255 with PartitionKey, RowKey and Timestamp); a string property
// at most 64 KiB in UTF-16 (32 K characters), a binary one 64 KiB; and the
// whole entity at most 1 MiB, counted as Azure counts it (entitySize).
// Azurite, the emulator the tests use, instead limits the UTF-8 JSON of the
// request to 1 MiB (its TableHandler.checkEntityLimit), which base64 makes
// larger than Azure's count for binary values: every entity this store
// writes is checked against both before it is sent, so that one that
// passes here passes on either.
const (
	maxEntityBytes   = 1 << 20
	maxPropertyBytes = 64 << 10
	maxProperties    = 252
)

// entitySize is the size of an entity as Azure Tables counts it ("How the
// size of an entity is calculated", Azure Storage team): 4 bytes, plus the
// keys in UTF-16, plus for each property 8 bytes, its name in UTF-16 and
// its value: a string 4 bytes plus 2 for each UTF-16 code unit, binary 4
// bytes plus its length, a date, a 64-bit number or a double 8, a 32-bit
// number 4, a boolean 1, a GUID 16.
func entitySize(pk, rk string, props map[string]any) int {
	n := 4 + 2*(utf16Len(pk)+utf16Len(rk))
	for name, v := range props {
		n += 8 + 2*utf16Len(name) + valueSize(v)
	}
	return n
}

func valueSize(v any) int {
	switch x := v.(type) {
	case string:
		return 4 + 2*utf16Len(x)
	case aztables.EDMBinary:
		return 4 + len(x)
	case []byte:
		return 4 + len(x)
	case bool:
		return 1
	case int32:
		return 4
	case aztables.EDMGUID:
		return 16
	default: // dates, 64-bit numbers, doubles
		return 8
	}
}

// utf16Len is the number of UTF-16 code units of s: characters outside the
// Basic Multilingual Plane take two.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n++
		if r >= 0x10000 {
			n++
		}
	}
	return n
}

// checkEntity refuses an entity over Azure's (or Azurite's) limits with an
// error that names the limit, before any request is made.
func checkEntity(pk, rk string, props map[string]any) ([]byte, error) {
	if len(props) > maxProperties {
		return nil, fmt.Errorf("azstore: entity %s/%s has %d properties, over Azure Tables' %d", pk, rk, len(props), maxProperties)
	}
	for name, v := range props {
		if s := valueSize(v) - 4; s > maxPropertyBytes {
			return nil, fmt.Errorf("azstore: property %s of entity %s/%s is %d bytes as Azure counts it, over the %d a property may hold", name, pk, rk, s, maxPropertyBytes)
		}
	}
	if n := entitySize(pk, rk, props); n > maxEntityBytes {
		return nil, fmt.Errorf("azstore: entity %s/%s is %d bytes as Azure Tables counts it (strings in UTF-16), over its 1 MiB", pk, rk, n)
	}
	b, err := json.Marshal(aztables.EDMEntity{Entity: aztables.Entity{PartitionKey: pk, RowKey: rk}, Properties: props})
	if err != nil {
		return nil, err
	}
	if len(b) > maxEntityBytes {
		return nil, fmt.Errorf("azstore: entity %s/%s is %d bytes of JSON, over the 1 MiB the storage emulator accepts", pk, rk, len(b))
	}
	return b, nil
}

// splitString cuts s into pieces of at most n bytes, never inside a
// character (a piece cut mid-character would not survive JSON).
func splitString(s string, n int) []string {
	var out []string
	for len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	return append(out, s)
}
