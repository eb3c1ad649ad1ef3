package gateway_test

// Operator-surface tests: the metrics the operations guide lists, label
// cardinality, and secrets in logs.

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"tether/gateway"
	"tether/gateway/api"
	"tether/sdkproto"
	"tether/wake/waketest"
)

// opsLog is a JSON zap logger at debug level into a buffer.
type opsLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *opsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *opsLog) Sync() error { return nil }

func (l *opsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *opsLog) logger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, l, zapcore.DebugLevel))
}

// opsDocMetrics reads the metric table of docs/operations.md section
// 6: metric name → documented label names.
func opsDocMetrics(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../docs/operations.md")
	require.NoError(t, err)
	doc := string(b)
	start := strings.Index(doc, "## 6. Monitoring")
	require.GreaterOrEqual(t, start, 0)
	doc = doc[start:]
	doc = doc[:strings.Index(doc, "\nPlus the Go")]
	out := map[string][]string{}
	paren := regexp.MustCompile(`\([^)]*\)`)
	tick := regexp.MustCompile("`([a-z_]+)`")
	for _, line := range strings.Split(doc, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.Contains(cells[1], "`tether_") {
			continue
		}
		var labels []string
		for _, m := range tick.FindAllStringSubmatch(paren.ReplaceAllString(cells[2], ""), -1) {
			labels = append(labels, m[1])
		}
		sort.Strings(labels)
		for _, m := range tick.FindAllStringSubmatch(cells[1], -1) {
			out[m[1]] = labels
		}
	}
	require.Greater(t, len(out), 20, "parsed the metric table")
	return out
}

// TestOpsMetricsLogsAndSecrets exercises what an operator's node does
// (apps, users, devices, sessions, a refused bind, a failed login, sends,
// wakes, an SMS fallback, a webhook, device pull, key rotation, shutdown)
// and then checks that every metric the operations guide lists is exposed
// on the metrics listener with exactly the listed labels, that no label
// value is an id, and that the logs (at debug level) hold no secret.
func TestOpsMetricsLogsAndSecrets(t *testing.T) {
	const adminToken = "ops-edge-admin-token-S3CRET-0001"
	logs := &opsLog{}
	f := startWakeWith(t, func(c *gateway.Config) {
		c.Logger = logs.logger()
		c.AdminToken = adminToken
		c.MaxSessionsPerUser = 1
	})
	ctx := f.ctx
	firstKey := f.app.Token

	// A webhook with a secret, answering 200.
	var hooks sync.WaitGroup
	hooks.Add(1)
	var hookOnce sync.Once
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hookOnce.Do(hooks.Done)
	}))
	defer hook.Close()
	const webhookSecret = "ops-edge-webhook-S3CRET-0002"
	_, err := f.app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: hook.URL + "/hook", Secret: webhookSecret}})
	require.NoError(t, err)

	iosToken := waketest.APNsToken(77)
	const fcmToken = "ops-edge-fcm-token-S3CRET-0003"
	f.device(t, "alice", "iphone", "apns", iosToken) // password pw-alice-123
	f.device(t, "bob", "pixel", "fcm", fcmToken)
	f.device(t, "carol", "tab", "fcm", "ops-edge-fcm-carol")

	// Carol online over direct TLS; a second device of hers is refused
	// (max 1 per user).
	got := make(chan string, 16)
	f.connect(t, "carol", "tab", got)
	second, err := sdkproto.Dial(ctx, sdkproto.Config{Addr: f.g.XMPPSAddr, App: "acme", User: "carol", Password: "pw-carol-123",
		Device: "tab2", TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err == nil {
		second.Close()
	}
	// A failed login with a wrong password.
	const wrongPassword = "ops-edge-wrong-password-S3CRET-0004"
	bad, err := sdkproto.Dial(ctx, sdkproto.Config{Addr: f.g.XMPPSAddr, App: "acme", User: "alice", Password: wrongPassword,
		Device: "iphone", TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err == nil {
		bad.Close()
		t.Fatal("a wrong password logged in")
	}

	// Sends: to carol (delivered), to alice and bob (offline: wakes), one
	// with an SMS fallback.
	const body = "ops-edge body S3CRET-0005"
	res, err := f.app.Send(ctx, "acme", api.SendRequest{To: []string{"carol", "alice", "bob"}, Body: body, Data: []byte(`{"otp":"S3CRET-0006"}`)}, "")
	require.NoError(t, err)
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("carol got nothing")
	}
	one := int64(1)
	const smsText, smsTo = "ops-edge sms code S3CRET-0007", "+393337654321"
	smsRes, err := f.app.Send(ctx, "acme", api.SendRequest{To: []string{"bob"}, Body: "x",
		SMSFallback: &api.SMSFallback{To: smsTo, Text: smsText, After: &one}}, "")
	require.NoError(t, err)
	eventually(t, 15*time.Second, "wakes and the SMS", func() bool {
		return len(f.apns.RequestsFor(iosToken)) > 0 && len(f.fcm.RequestsFor(fcmToken)) > 0 && len(f.sms.Requests()) > 0
	})

	// Device HTTP pull with the password (alice's second device id).
	req, _ := http.NewRequest(http.MethodGet, f.g.URL+"/v1/device/messages", nil)
	req.SetBasicAuth("alice@acme", "pw-alice-123")
	req.Header.Set("Tether-Device", "laptop")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	// Key rotation.
	rot, err := f.g.Admin().RotateKey(ctx, "acme")
	require.NoError(t, err)
	newKey := rot.APIKey
	hooks.Wait()

	// Metrics, scraped from the metrics listener.
	mresp, err := http.Get("http://" + f.g.Addr("metrics") + "/metrics")
	require.NoError(t, err)
	text, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	families, err := f.g.Registry().Gather()
	require.NoError(t, err)

	t.Run("documented metrics", func(t *testing.T) {
		byName := map[string][]string{}
		for _, mf := range families {
			set := map[string]bool{}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					set[lp.GetName()] = true
				}
			}
			var names []string
			for n := range set {
				names = append(names, n)
			}
			sort.Strings(names)
			byName[mf.GetName()] = names
		}
		// Vectors appear once they have a series; these are the ones this
		// test does not make.
		optional := map[string]bool{"tether_sm_resumes_total": true, "tether_queue_timers_total": true,
			// Where the kernel counts them: schedstat (Linux), and a cgroup
			// with a CPU controller.
			"tether_cgroup_cpu_throttled_seconds_total": true,
			"tether_process_cpu_wait_seconds_total":     runtime.GOOS != "linux"}
		for name, labels := range opsDocMetrics(t) {
			got, ok := byName[name]
			if !ok {
				if !optional[name] {
					t.Errorf("documented metric %s is not exposed", name)
				}
				continue
			}
			if labels == nil {
				labels = []string{}
			}
			if got == nil {
				got = []string{}
			}
			require.Equal(t, labels, got, "labels of %s", name)
			require.Contains(t, string(text), "\n# TYPE "+name+" ", "%s on /metrics", name)
		}
		for _, n := range []string{"go_goroutines", "process_open_fds", "process_max_fds", "process_resident_memory_bytes", "go_sched_latencies_seconds"} {
			require.Contains(t, byName, n)
		}
	})

	t.Run("no ids in labels", func(t *testing.T) {
		ids := []string{"alice", "bob", "carol", "iphone", "pixel", "tab", "laptop", smsRes.Messages[0].ID, iosToken, fcmToken}
		for _, m := range res.Messages {
			ids = append(ids, m.ID)
		}
		for _, mf := range families {
			if !strings.HasPrefix(mf.GetName(), "tether_") {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					for _, id := range ids {
						require.NotContains(t, lp.GetValue(), id, "%s{%s=%q}", mf.GetName(), lp.GetName(), lp.GetValue())
					}
				}
			}
		}
	})

	f.g.Stop()
	t.Run("no secrets in logs", func(t *testing.T) {
		all := logs.String()
		require.Contains(t, all, `"ready"`, "the logger was used")
		for what, secret := range map[string]string{
			"admin token": adminToken, "first API key": firstKey, "rotated API key": newKey,
			"webhook secret": webhookSecret, "user password": "pw-alice-123", "wrong password": wrongPassword,
			"APNs token": iosToken, "FCM token": fcmToken, "SMS provider key": f.sms.APIKey,
			"SMS text": smsText, "message body": body, "message data": "S3CRET-0006", "SMS number": smsTo,
		} {
			require.NotContains(t, all, secret, "the log holds the %s", what)
		}
	})
}

// TestOpsUnreachableAPNsLogsNoToken: when the APNs endpoint cannot be
// reached, the warning logged must not hold the device's push token in
// full (the pool logs a TokenRef hash on purpose; the transport error
// names the request URL, /3/device/<token>).
func TestOpsUnreachableAPNsLogsNoToken(t *testing.T) {
	logs := &opsLog{}
	f := startWakeWith(t, func(c *gateway.Config) { c.Logger = logs.logger() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "https://" + ln.Addr().String()
	ln.Close()
	_, err = f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{
		APNS: &api.APNSConfig{KeyP8: f.apns.KeyP8, KeyID: f.apns.KeyID, TeamID: f.apns.TeamID, Topic: "com.acme.app", Endpoint: closed}})
	require.NoError(t, err)
	token := waketest.APNsToken(91)
	f.device(t, "dora", "iphone", "apns", token)
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"dora"}, Body: "hi"}, "")
	require.NoError(t, err)
	eventually(t, 15*time.Second, "an APNs wake attempt logged", func() bool {
		return regexp.MustCompile(`"msg":"wake".*"provider":"apns"`).MatchString(logs.String())
	})
	f.g.Stop()
	for _, line := range strings.Split(logs.String(), "\n") {
		require.NotContains(t, line, token, "a log line holds the full push token")
	}
}
