package gateway

import (
	"encoding/json"
	"testing"

	"tether/gateway/api"
)

// FuzzSendRequest feeds arbitrary bodies through the strict decoder and the
// send validation: they must never panic, and whatever they accept must be
// a request the queue can take.
func FuzzSendRequest(f *testing.F) {
	for _, s := range []string{
		`{"to":["alice"],"body":"hi"}`,
		`{"to":["alice","bob/phone1"],"body":"x","data":{"a":[1,2]},"expires_in":0,"priority":"high","collapse_key":"otp","ref":"r","channel":"c","delivery":"any","sms_fallback":{"to":"+393331234567","text":"t","after":30}}`,
		`{"to":["+393331234567"],"data":null}`,
		`{"to":[],"body":""}`,
		`{"to":["a"],"body":"x","unknown":1}`,
		`{"to":["a"],"body":5}`,
		`[]`, `null`, `{"to":["a"],"body":"x"} {}`, `{"sms_fallback":{"when":1}}`,
	} {
		f.Add([]byte(s))
	}
	g := &Gateway{cfg: Config{MaxPayloadBytes: 16 << 10}}
	app := &appRecord{ID: "acme"}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req api.SendRequest
		if aerr := decodeStrict(raw, &req); aerr != nil {
			if aerr.Code == "" || aerr.Message == "" {
				t.Fatalf("error without code or message: %+v", aerr)
			}
			return
		}
		q, aerr := g.buildEnqueue(app, &req)
		if aerr != nil {
			if codeStatus[aerr.Code] == 0 || aerr.Message == "" {
				t.Fatalf("bad error: %+v", aerr)
			}
			return
		}
		if len(q.To) == 0 || len(q.To) > 10000 {
			t.Fatalf("accepted %d recipients", len(q.To))
		}
		if q.Body == "" && len(q.Data) == 0 {
			t.Fatal("accepted a message without content")
		}
		if len(q.Data) > 0 && !json.Valid(q.Data) {
			t.Fatal("accepted invalid data JSON")
		}
		if len(q.Body)+len(q.Data) > 16<<10 {
			t.Fatal("accepted an oversize payload")
		}
	})
}

// FuzzPatchApp checks the PATCH decoder and validation never panic.
func FuzzPatchApp(f *testing.F) {
	for _, s := range []string{
		`{"webhook":{"url":"https://example.com/h","secret":"s"}}`,
		`{"apns":{"key_p8":"-----BEGIN PRIVATE KEY-----","key_id":"K","team_id":"T","topic":"com.x","environment":"sandbox","wake":"background"}}`,
		`{"defaults":{"expires_in":60,"fallback_after":{"high":60}}}`,
		`{"sms":{"provider":"http","url":"http://127.0.0.1/sms"}}`, `{"client_config":{"a":1}}`, `{"webhook":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req api.PatchAppRequest
		if aerr := decodeStrict(raw, &req); aerr != nil {
			return
		}
		if aerr := validatePatch(&req); aerr != nil && aerr.Message == "" {
			t.Fatal("error without message")
		}
	})
}
