package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"tether/gateway/api"
)

// apiError makes an *api.Error; status follows from code.
func apiError(code, field, format string, args ...any) *api.Error {
	return &api.Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

var codeStatus = map[string]int{
	api.CodeInvalidArgument:  http.StatusBadRequest,
	api.CodeUnauthenticated:  http.StatusUnauthorized,
	api.CodePermissionDenied: http.StatusForbidden,
	api.CodeNotFound:         http.StatusNotFound,
	api.CodeMethodNotAllowed: http.StatusMethodNotAllowed,
	api.CodeConflict:         http.StatusConflict,
	api.CodePayloadTooLarge:  http.StatusRequestEntityTooLarge,
	api.CodeRateLimited:      http.StatusTooManyRequests,
	api.CodeUnavailable:      http.StatusServiceUnavailable,
	api.CodeInternal:         http.StatusInternalServerError,
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encoding the answer failed"}}`)
	}
	writeJSONBody(w, status, b)
}

// writeJSONBody answers with the JSON value b and a newline, as writeJSON.
// It may append the newline to b.
func writeJSONBody(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers with err: an *api.Error as it is, anything else as an
// internal error whose detail is logged with an error id, not shown.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		id := randomToken(6)
		g.log.Error("request failed", zap.String("error_id", id), zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		ae = apiError(api.CodeInternal, "", "internal error (id %s)", id)
	}
	status := codeStatus[ae.Code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if status == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "60") // the login throttle's window
	}
	writeJSON(w, status, api.ErrorBody{Error: ae})
}

// decodeJSON reads a request body into v strictly: at most MaxBodyBytes,
// no unknown fields, the right types, one JSON value.
func (g *Gateway) decodeJSON(w http.ResponseWriter, r *http.Request, v any) *api.Error {
	raw, err := g.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(raw, v)
}

// decodeStrict is decodeJSON's parser, separate so it can be fuzzed.
func decodeStrict(raw []byte, v any) *api.Error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return apiError(api.CodeInvalidArgument, "", "empty body: a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		ae := jsonError(err)
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			ae.Field = unknownFieldPath(raw, ae.Field)
		}
		return ae
	}
	// Only JSON whitespace may follow the value. Looked up in raw rather
	// than asked of the decoder (More, Token), which would refill its
	// buffer first: a fresh allocation of twice the body on every request,
	// 8 % of all the gateway allocated in the soak.
	if len(bytes.TrimLeft(raw[dec.InputOffset():], " \t\r\n")) > 0 {
		return apiError(api.CodeInvalidArgument, "", "trailing data after the JSON object")
	}
	return nil
}

func jsonError(err error) *api.Error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return apiError(api.CodeInvalidArgument, te.Field, "%s must be %s, not %s", fieldOr(te.Field), te.Type.String(), te.Value)
	case errors.As(err, &se):
		return apiError(api.CodeInvalidArgument, "", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apiError(api.CodeInvalidArgument, "", "malformed JSON: unexpected end of input")
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return apiError(api.CodeInvalidArgument, f, "unknown field %q", f)
	}
	return apiError(api.CodeInvalidArgument, "", "malformed JSON: %s", strings.TrimPrefix(msg, "json: "))
}

// unknownFieldPath finds where an unknown field sits: encoding/json names
// only the key, so look for it at the top level, then one object down.
func unknownFieldPath(raw []byte, key string) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return key
	}
	if _, ok := top[key]; ok {
		return key
	}
	for name, v := range top {
		var inner map[string]json.RawMessage
		if json.Unmarshal(v, &inner) == nil {
			if _, ok := inner[key]; ok {
				return name + "." + key
			}
		}
	}
	return key
}

func fieldOr(f string) string {
	if f == "" {
		return "the body"
	}
	return f
}

// queryInt parses an optional integer query parameter within [lo, hi].
func queryInt(r *http.Request, name string, def, lo, hi int64) (int64, *api.Error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, apiError(api.CodeInvalidArgument, name, "%s must be an integer from %d to %d", name, lo, hi)
	}
	return v, nil
}
