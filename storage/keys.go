package storage

import (
	"encoding/binary"
	"errors"
)

// Table prefixes. Every key starts with one of these bytes; the rest of the
// key schema is described in the package doc. The values are part of the
// on-disk format: never renumber them.
const (
	tableMeta      byte = 'Z' // Z name                        → meta value (sequence lease)
	tableApp       byte = 'A' // A app                         → app record
	tableAPIKey    byte = 'K' // K sha256(key)                 → api key record
	tableUser      byte = 'U' // U app user                    → user record (SCRAM keys)
	tableDevice    byte = 'D' // D app user device             → device record
	tableCursor    byte = 'C' // C app user device             → seq (8 bytes BE)
	tableMessage   byte = 'M' // M app user seq                → message (payload)
	tableStatus    byte = 'S' // S app seq                     → status record
	tableCollapse  byte = 'L' // L app user collapsekey        → seqs (8 bytes BE each)
	tableTimer     byte = 'T' // T atMillis kind seq           → timer payload
	tableEvent     byte = 'E' // E app seq                     → event
	tableIdem      byte = 'I' // I app sha256(idempotency key) → stored answer
	tableToken     byte = 'N' // N app sha256(provider:token)  → invalid-token record
	tableAppCursor byte = 'W' // W app name                    → seq (8 bytes BE), per-app consumer cursors
	tableWake      byte = 'P' // P app user device             → recent wake push times (8 bytes BE Unix ms each)
)

// Limits on the variable-length components of a key. They match the id
// grammars of the REST API and keep every length prefix in one byte.
const (
	MaxAppLen    = 63
	MaxUserLen   = 128
	MaxDeviceLen = 64
	MaxNameLen   = 255 // collapse keys, cursor names
)

// errBadKey is returned by the key decoders for bytes that are not a key of
// the expected table.
var errBadKey = errors.New("storage: malformed key")

// appendComponent appends a one-byte length followed by s. A length prefix,
// not a separator, ends each component, so the range of user "ab" never
// contains a key of user "abc".
func appendComponent(k []byte, s string) []byte {
	k = append(k, byte(len(s)))
	return append(k, s...)
}

func appendUint64(k []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(k, v)
}

// readComponent reads one length-prefixed component from k.
func readComponent(k []byte) (string, []byte, error) {
	if len(k) < 1 || int(k[0]) > len(k)-1 {
		return "", nil, errBadKey
	}
	n := int(k[0])
	return string(k[1 : 1+n]), k[1+n:], nil
}

func checkLen(s string, max int) error {
	if len(s) == 0 || len(s) > max {
		return errBadKey
	}
	return nil
}

// appKey is the key of an app record, and appPrefix the prefix of every key
// of an app in tbl.
func appPrefix(tbl byte, app string) []byte {
	return appendAppPrefix(make([]byte, 0, 2+len(app)+48), tbl, app)
}

func appendAppPrefix(dst []byte, tbl byte, app string) []byte {
	return appendComponent(append(dst, tbl), app)
}

func userPrefix(tbl byte, app, user string) []byte {
	return appendComponent(appPrefix(tbl, app), user)
}

func appendUserPrefix(dst []byte, tbl byte, app, user string) []byte {
	return appendComponent(appendAppPrefix(dst, tbl, app), user)
}

func deviceKey(tbl byte, app, user, device string) []byte {
	return appendComponent(userPrefix(tbl, app, user), device)
}

// MessageKey encodes the key of message seq in the log of app/user.
func MessageKey(app, user string, seq uint64) []byte {
	return appendUint64(userPrefix(tableMessage, app, user), seq)
}

// DecodeMessageKey is the inverse of MessageKey.
func DecodeMessageKey(k []byte) (app, user string, seq uint64, err error) {
	if len(k) < 1 || k[0] != tableMessage {
		return "", "", 0, errBadKey
	}
	if app, k, err = readComponent(k[1:]); err != nil {
		return "", "", 0, err
	}
	if user, k, err = readComponent(k); err != nil {
		return "", "", 0, err
	}
	if len(k) != 8 || checkLen(app, MaxAppLen) != nil || checkLen(user, MaxUserLen) != nil {
		return "", "", 0, errBadKey
	}
	return app, user, binary.BigEndian.Uint64(k), nil
}

// StatusKey encodes the key of the status record of message seq of app.
func StatusKey(app string, seq uint64) []byte {
	return appendUint64(appPrefix(tableStatus, app), seq)
}

// DecodeStatusKey is the inverse of StatusKey.
func DecodeStatusKey(k []byte) (app string, seq uint64, err error) {
	return decodeAppSeqKey(tableStatus, k)
}

// decodeAppSeqKey decodes a key of table made by appendUint64(appPrefix(table, app), seq).
func decodeAppSeqKey(table byte, k []byte) (app string, seq uint64, err error) {
	if len(k) < 1 || k[0] != table {
		return "", 0, errBadKey
	}
	if app, k, err = readComponent(k[1:]); err != nil {
		return "", 0, err
	}
	if len(k) != 8 || checkLen(app, MaxAppLen) != nil {
		return "", 0, errBadKey
	}
	return app, binary.BigEndian.Uint64(k), nil
}

// TimerKey encodes the key of a timer of kind for seq due at atMillis (Unix
// milliseconds). Timers sort by due time first, so the due ones are one
// range from the start of the table.
func TimerKey(atMillis int64, kind byte, seq uint64) []byte {
	return appendTimerKey(make([]byte, 0, 18), atMillis, kind, seq)
}

func appendTimerKey(k []byte, atMillis int64, kind byte, seq uint64) []byte {
	k = append(k, tableTimer)
	k = appendUint64(k, uint64(max(atMillis, 0)))
	k = append(k, kind)
	return appendUint64(k, seq)
}

// DecodeTimerKey is the inverse of TimerKey.
func DecodeTimerKey(k []byte) (atMillis int64, kind byte, seq uint64, err error) {
	if len(k) != 18 || k[0] != tableTimer {
		return 0, 0, 0, errBadKey
	}
	at := binary.BigEndian.Uint64(k[1:9])
	if at > 1<<62 {
		return 0, 0, 0, errBadKey
	}
	return int64(at), k[9], binary.BigEndian.Uint64(k[10:]), nil
}

// EventKey encodes the key of event seq in the feed of app.
func EventKey(app string, seq uint64) []byte {
	return appendUint64(appPrefix(tableEvent, app), seq)
}

// DecodeEventKey is the inverse of EventKey.
func DecodeEventKey(k []byte) (app string, seq uint64, err error) {
	return decodeAppSeqKey(tableEvent, k)
}

// DeviceKey encodes the key of the device record app/user/device.
func DeviceKey(app, user, device string) []byte { return deviceKey(tableDevice, app, user, device) }

// DecodeDeviceKey is the inverse of DeviceKey.
func DecodeDeviceKey(k []byte) (app, user, device string, err error) {
	if len(k) < 1 || k[0] != tableDevice {
		return "", "", "", errBadKey
	}
	if app, k, err = readComponent(k[1:]); err != nil {
		return "", "", "", err
	}
	if user, k, err = readComponent(k); err != nil {
		return "", "", "", err
	}
	if device, k, err = readComponent(k); err != nil {
		return "", "", "", err
	}
	if len(k) != 0 || checkLen(app, MaxAppLen) != nil || checkLen(user, MaxUserLen) != nil || checkLen(device, MaxDeviceLen) != nil {
		return "", "", "", errBadKey
	}
	return app, user, device, nil
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// appScopedTables are the tables whose keys start with an app component;
// deleting an app range-deletes its prefix in each.
var appScopedTables = []byte{tableApp, tableUser, tableDevice, tableCursor, tableMessage, tableStatus, tableCollapse, tableEvent, tableIdem, tableAppCursor, tableWake, tableToken}

// userScopedTables are the tables whose keys start with app and user.
var userScopedTables = []byte{tableUser, tableDevice, tableCursor, tableMessage, tableCollapse, tableWake}
