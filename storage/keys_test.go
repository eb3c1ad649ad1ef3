package storage_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tether/storage"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files in testdata")

func TestMessageKeyRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, app, user string
		seq             uint64
	}{
		{"short", "a", "b", 1},
		{"phone", "acme", "+393331234567", 42},
		{"max lengths", strings.Repeat("a", storage.MaxAppLen), strings.Repeat("u", storage.MaxUserLen), math.MaxUint64},
		{"zero seq", "acme", "alice", 0},
		{"binary-looking ids", "a-1", "x.y_z=+", 1 << 40},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := storage.MessageKey(tc.app, tc.user, tc.seq)
			app, user, seq, err := storage.DecodeMessageKey(k)
			require.NoError(t, err)
			require.Equal(t, tc.app, app)
			require.Equal(t, tc.user, user)
			require.Equal(t, tc.seq, seq)
		})
	}
}

func TestStatusAndEventKeyRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, app string
		seq       uint64
	}{
		{"short", "a", 1},
		{"typical", "acme", 123456789},
		{"max", strings.Repeat("z", storage.MaxAppLen), math.MaxUint64},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			app, seq, err := storage.DecodeStatusKey(storage.StatusKey(tc.app, tc.seq))
			require.NoError(t, err)
			require.Equal(t, tc.app, app)
			require.Equal(t, tc.seq, seq)

			app, seq, err = storage.DecodeEventKey(storage.EventKey(tc.app, tc.seq))
			require.NoError(t, err)
			require.Equal(t, tc.app, app)
			require.Equal(t, tc.seq, seq)

			// A status key is not an event key and vice versa.
			_, _, err = storage.DecodeEventKey(storage.StatusKey(tc.app, tc.seq))
			require.Error(t, err)
			_, _, err = storage.DecodeStatusKey(storage.EventKey(tc.app, tc.seq))
			require.Error(t, err)
		})
	}
}

func TestTimerKeyRoundTripAndOrder(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		at   int64
		kind byte
		seq  uint64
	}{
		{"zero", 0, 0, 0},
		{"now", 1767225600000, 1, 7},
		{"max at", 1 << 62, 255, math.MaxUint64},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			at, kind, seq, err := storage.DecodeTimerKey(storage.TimerKey(tc.at, tc.kind, tc.seq))
			require.NoError(t, err)
			require.Equal(t, tc.at, at)
			require.Equal(t, tc.kind, kind)
			require.Equal(t, tc.seq, seq)
		})
	}
	// Negative times clamp to 0 (before every real timer).
	at, _, _, err := storage.DecodeTimerKey(storage.TimerKey(-5, 1, 1))
	require.NoError(t, err)
	require.Zero(t, at)
	// Due time sorts first, then kind, then seq.
	require.Negative(t, bytes.Compare(storage.TimerKey(1, 9, 9), storage.TimerKey(2, 0, 0)))
	require.Negative(t, bytes.Compare(storage.TimerKey(255, 9, 9), storage.TimerKey(256, 0, 0)))
	require.Negative(t, bytes.Compare(storage.TimerKey(5, 1, 9), storage.TimerKey(5, 2, 0)))
	require.Negative(t, bytes.Compare(storage.TimerKey(5, 1, 255), storage.TimerKey(5, 1, 256)))
}

func TestDeviceKeyRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, app, user, device string }{
		{"short", "a", "b", "c"},
		{"typical", "acme", "alice", "phone1"},
		{"max", strings.Repeat("a", storage.MaxAppLen), strings.Repeat("u", storage.MaxUserLen), strings.Repeat("d", storage.MaxDeviceLen)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			app, user, device, err := storage.DecodeDeviceKey(storage.DeviceKey(tc.app, tc.user, tc.device))
			require.NoError(t, err)
			require.Equal(t, []string{tc.app, tc.user, tc.device}, []string{app, user, device})
		})
	}
}

func TestDecodeRejectsMalformedKeys(t *testing.T) {
	t.Parallel()
	good := storage.MessageKey("acme", "alice", 1)
	cases := []struct {
		name string
		k    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"prefix only", []byte{'M'}},
		{"wrong table", append([]byte{'X'}, good[1:]...)},
		{"truncated seq", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"length past end", []byte{'M', 200, 'a'}},
		{"empty app", storage.MessageKey("", "alice", 1)},
		{"empty user", storage.MessageKey("acme", "", 1)},
		{"app too long", storage.MessageKey(strings.Repeat("a", storage.MaxAppLen+1), "alice", 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, _, err := storage.DecodeMessageKey(tc.k)
			require.Error(t, err)
		})
	}

	_, _, _, err := storage.DecodeTimerKey(storage.TimerKey(1, 1, 1)[:17])
	require.Error(t, err)
	_, _, _, err = storage.DecodeTimerKey(storage.TimerKey(1<<62+1, 1, 1))
	require.Error(t, err, "times past 1<<62 ms are not produced by any clock")
	_, _, _, err = storage.DecodeDeviceKey(append(storage.DeviceKey("a", "b", "c"), 0))
	require.Error(t, err)
	_, _, _, err = storage.DecodeDeviceKey(storage.DeviceKey("a", "b", strings.Repeat("d", storage.MaxDeviceLen+1)))
	require.Error(t, err)
	_, _, err = storage.DecodeStatusKey(storage.StatusKey("acme", 1)[:5])
	require.Error(t, err)
	_, _, err = storage.DecodeEventKey([]byte{'E'})
	require.Error(t, err)
}

// goldenKeys are the keys whose bytes are part of the on-disk format. A
// change here breaks existing stores: update testdata/keys.golden with
// -rewrite only together with a migration.
func goldenKeys() []struct {
	name string
	key  []byte
} {
	return []struct {
		name string
		key  []byte
	}{
		{"message acme alice 1", storage.MessageKey("acme", "alice", 1)},
		{"message acme +393331234567 2^40", storage.MessageKey("acme", "+393331234567", 1<<40)},
		{"message a ab 0", storage.MessageKey("a", "ab", 0)},
		{"status acme 1", storage.StatusKey("acme", 1)},
		{"status acme max", storage.StatusKey("acme", math.MaxUint64)},
		{"timer 1767225600000 1 7", storage.TimerKey(1767225600000, 1, 7)},
		{"timer 0 4 1", storage.TimerKey(0, 4, 1)},
		{"event acme 258", storage.EventKey("acme", 258)},
		{"device acme alice phone1", storage.DeviceKey("acme", "alice", "phone1")},
		{"device a b c", storage.DeviceKey("a", "b", "c")},
	}
}

func TestGoldenKeys(t *testing.T) {
	path := filepath.Join("testdata", "keys.golden")
	var got strings.Builder
	got.WriteString("# Golden key bytes (on-disk format). Regenerate: go test ./storage -run TestGoldenKeys -rewrite\n")
	for _, g := range goldenKeys() {
		fmt.Fprintf(&got, "%s: %s\n", g.name, hex.EncodeToString(g.key))
	}
	if *rewrite {
		require.NoError(t, os.WriteFile(path, []byte(got.String()), 0o644))
		return
	}
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hx, ok := strings.Cut(line, ": ")
		require.True(t, ok, "bad golden line %q", line)
		want[name] = hx
	}
	require.NoError(t, sc.Err())
	require.Len(t, want, len(goldenKeys()), "golden file and goldenKeys disagree; run with -rewrite if the key set changed")
	for _, g := range goldenKeys() {
		require.Equal(t, want[g.name], hex.EncodeToString(g.key), "key %q changed: that breaks stores on disk", g.name)
	}
}

// TestKeyRangesDoNotNest checks that the range of one id never contains keys
// of another id that extends it ("ab" vs "abc"), both on the key bytes and
// through the store's scans.
func TestKeyRangesDoNotNest(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		b := db.NewBatch()
		for _, u := range []string{"ab", "abc", "a", "abd", "b"} {
			b.PutMessage("a", u, 1, []byte("a/"+u))
			b.PutMessage("ab", u, 1, []byte("ab/"+u))
			b.PutDevice("a", u, "d", []byte("a/"+u))
			b.PutDevice("ab", u, "d", []byte("ab/"+u))
			b.PutDevice("a", u, "dd", []byte("a/"+u+"/dd"))
		}
		b.PutMessage("a", "ab", 2, []byte("a/ab#2"))
		b.PutMessage("abc", "ab", 1, []byte("abc/ab"))
		require.NoError(t, b.Commit(true))

		var vals []string
		require.NoError(t, db.ScanMessages("a", "ab", 0, func(seq uint64, v []byte) bool {
			vals = append(vals, string(v))
			return true
		}))
		require.Equal(t, []string{"a/ab", "a/ab#2"}, vals)

		vals = nil
		require.NoError(t, db.ScanMessages("ab", "ab", 0, func(seq uint64, v []byte) bool {
			vals = append(vals, string(v))
			return true
		}))
		require.Equal(t, []string{"ab/ab"}, vals, "app ab sees neither app a nor app abc")

		var devs []string
		require.NoError(t, db.ScanDevices("a", "ab", func(d string, v []byte) bool {
			devs = append(devs, d+"="+string(v))
			return true
		}))
		require.Equal(t, []string{"d=a/ab", "dd=a/ab/dd"}, devs)

		devs = nil
		require.NoError(t, db.ScanDevices("ab", "a", func(d string, v []byte) bool {
			devs = append(devs, d+"="+string(v))
			return true
		}))
		require.Equal(t, []string{"d=ab/a"}, devs)
	})

	// On the key bytes: no key of user "abc" (or app "ab") falls between
	// the smallest and largest message keys of user "ab" (app "a").
	lo, hi := storage.MessageKey("acme", "ab", 0), storage.MessageKey("acme", "ab", math.MaxUint64)
	for _, k := range [][]byte{
		storage.MessageKey("acme", "abc", 0), storage.MessageKey("acme", "abc", math.MaxUint64),
		storage.MessageKey("acme", "a", math.MaxUint64), storage.MessageKey("acme", "ab\x00", 0),
	} {
		require.False(t, bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) <= 0, "%x inside the range of user ab", k)
	}
	lo, hi = storage.StatusKey("a", 0), storage.StatusKey("a", math.MaxUint64)
	for _, k := range [][]byte{storage.StatusKey("ab", 0), storage.StatusKey("ab", math.MaxUint64)} {
		require.False(t, bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) <= 0, "%x inside the range of app a", k)
	}
}
