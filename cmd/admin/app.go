package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"tether/gateway/api"
)

func appCreate(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "ID [--name NAME]")
	appName := fs.String("name", "", "display `name` (default: the id)")
	pos, cl, err := c.begin(fs, args, 1, 1)
	if err != nil {
		return err
	}
	app, err := cl.CreateApp(ctx, api.CreateAppRequest{ID: pos[0], Name: *appName})
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout)
	t.row("id", app.ID)
	t.row("name", app.Name)
	t.row("xmpp_domain", app.XMPPDomain)
	t.row("api_key", app.APIKey)
	if err := t.flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stdout, "The API key is shown only once: keep it now.")
	return err
}

func appList(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "")
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	apps, err := cl.ListApps(ctx)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout, "ID", "NAME", "XMPP DOMAIN", "CREATED", "WEBHOOK", "APNS", "FCM", "SMS")
	for _, a := range apps {
		t.row(a.ID, a.Name, a.XMPPDomain, fmtTime(a.CreatedAt), yesNo(a.Webhook != nil),
			yesNo(a.APNS != nil), yesNo(a.FCM != nil), yesNo(a.SMS != nil))
	}
	return t.flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func appShow(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP"), args, 1, 1)
	if err != nil {
		return err
	}
	app, err := cl.GetApp(ctx, pos[0])
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	return c.printApp(app)
}

// printApp shows an app as key/value lines; secrets only as set or not.
func (c *cli) printApp(a *api.App) error {
	t := newTable(c.stdout)
	t.row("id", a.ID)
	t.row("name", a.Name)
	t.row("xmpp_domain", a.XMPPDomain)
	t.row("created_at", fmtTime(a.CreatedAt))
	if w := a.Webhook; w != nil {
		t.row("webhook", pairs("url", w.URL, "secret", fmtSet(w.Secret.Set)))
	} else {
		t.row("webhook", "-")
	}
	if p := a.APNS; p != nil {
		t.row("apns", pairs("key_p8", fmtSet(p.KeyP8.Set), "key_id", p.KeyID, "team_id", p.TeamID,
			"topic", p.Topic, "environment", p.Environment, "wake", p.Wake,
			"alert_text", quoteIf(p.AlertText), "endpoint", p.Endpoint))
	} else {
		t.row("apns", "-")
	}
	if f := a.FCM; f != nil {
		t.row("fcm", pairs("service_account_json", fmtSet(f.ServiceAccountJSON.Set),
			"project_id", f.ProjectID, "endpoint", f.Endpoint))
	} else {
		t.row("fcm", "-")
	}
	if s := a.SMS; s != nil {
		t.row("sms", pairs("provider", s.Provider, "url", s.URL, "from", s.From,
			"api_key", fmtSet(s.APIKey.Set), "api_secret", fmtSet(s.APISecret.Set)))
	} else {
		t.row("sms", "-")
	}
	d := a.Defaults
	t.row("defaults.expires_in", fmtInt(d.ExpiresIn))
	t.row("defaults.wake_interval", fmtInt(d.WakeInterval))
	t.row("defaults.fallback_after", fmtMap(d.FallbackAfter))
	t.row("defaults.reject_unknown_users", fmtBool(d.RejectUnknownUsers))
	cc := strings.TrimSpace(string(a.ClientConfig))
	if cc == "" || cc == "null" {
		cc = "-"
	}
	t.row("client_config", cc)
	return t.flush()
}

func quoteIf(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf("%q", s)
}

func appSet(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "APP [setting flags]")
	appName := fs.String("name", "", "display `name`")
	whURL := fs.String("webhook-url", "", "webhook `URL` events are posted to")
	whSecret := fs.String("webhook-secret", "", "webhook HMAC `secret`")
	apnsKeyFile := fs.String("apns-key-file", "", "APNs token-auth key (`.p8` file)")
	apnsKeyID := fs.String("apns-key-id", "", "APNs key `id`")
	apnsTeamID := fs.String("apns-team-id", "", "APNs team `id`")
	apnsTopic := fs.String("apns-topic", "", "APNs `topic` (bundle id)")
	apnsEnv := fs.String("apns-environment", "", "APNs `environment`: production or sandbox")
	apnsWake := fs.String("apns-wake", "", "APNs wake `kind`: alert or background")
	apnsAlert := fs.String("apns-alert-text", "", "placeholder alert `text` of alert wakes")
	apnsEndpoint := fs.String("apns-endpoint", "", "APNs base `URL` override")
	fcmFile := fs.String("fcm-service-account-file", "", "FCM service account JSON `file`")
	fcmEndpoint := fs.String("fcm-endpoint", "", "FCM base `URL` override")
	smsProvider := fs.String("sms-provider", "", "SMS `provider`: http or vonage")
	smsURL := fs.String("sms-url", "", "SMS provider `URL`")
	smsKey := fs.String("sms-api-key", "", "SMS provider API `key`")
	smsSecret := fs.String("sms-api-secret", "", "SMS provider API `secret`")
	smsFrom := fs.String("sms-from", "", "SMS sender `id`")
	var expiresIn, wakeInterval, fbHigh, fbNormal optInt
	fs.Var(&expiresIn, "expires-in", "default message lifetime in `seconds`")
	fs.Var(&wakeInterval, "wake-interval", "first wake retry interval in `seconds`")
	fs.Var(&fbHigh, "fallback-after-high", "SMS fallback delay for high priority, `seconds`")
	fs.Var(&fbNormal, "fallback-after-normal", "SMS fallback delay for normal priority, `seconds`")
	var rejectUnknown optBool
	fs.Var(&rejectUnknown, "reject-unknown-users", "refuse messages to users that do not exist")
	clientConfig := fs.String("client-config", "", "`JSON` (or @FILE) delivered to devices")
	pos, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	given := func(names ...string) bool {
		for _, n := range names {
			if set[n] {
				return true
			}
		}
		return false
	}

	var req api.PatchAppRequest
	changed := false
	if set["name"] {
		req.Name, changed = appName, true
	}
	if given("webhook-url", "webhook-secret") {
		req.Webhook, changed = &api.WebhookConfig{URL: *whURL, Secret: *whSecret}, true
	}
	if given("apns-key-file", "apns-key-id", "apns-team-id", "apns-topic", "apns-environment",
		"apns-wake", "apns-alert-text", "apns-endpoint") {
		a := &api.APNSConfig{KeyID: *apnsKeyID, TeamID: *apnsTeamID, Topic: *apnsTopic,
			Environment: *apnsEnv, Wake: *apnsWake, AlertText: *apnsAlert, Endpoint: *apnsEndpoint}
		if *apnsKeyFile != "" {
			b, err := os.ReadFile(*apnsKeyFile)
			if err != nil {
				return fmt.Errorf("--apns-key-file: %w", err)
			}
			a.KeyP8 = string(b)
		}
		req.APNS, changed = a, true
	}
	if given("fcm-service-account-file", "fcm-endpoint") {
		f := &api.FCMConfig{Endpoint: *fcmEndpoint}
		if *fcmFile != "" {
			sa, err := readJSONArg("fcm-service-account-file", "@"+*fcmFile)
			if err != nil {
				return err
			}
			f.ServiceAccountJSON = string(sa)
		}
		req.FCM, changed = f, true
	}
	if given("sms-provider", "sms-url", "sms-api-key", "sms-api-secret", "sms-from") {
		req.SMS = &api.SMSConfig{Provider: *smsProvider, URL: *smsURL, APIKey: *smsKey,
			APISecret: *smsSecret, From: *smsFrom}
		changed = true
	}
	if given("expires-in", "wake-interval", "fallback-after-high", "fallback-after-normal", "reject-unknown-users") {
		d := &api.Defaults{ExpiresIn: expiresIn.v, WakeInterval: wakeInterval.v, RejectUnknownUsers: rejectUnknown.v}
		if fbHigh.v != nil || fbNormal.v != nil {
			d.FallbackAfter = map[string]int64{}
			if fbHigh.v != nil {
				d.FallbackAfter["high"] = *fbHigh.v
			}
			if fbNormal.v != nil {
				d.FallbackAfter["normal"] = *fbNormal.v
			}
		}
		req.Defaults, changed = d, true
	}
	if set["client-config"] {
		if req.ClientConfig, err = readJSONArg("client-config", *clientConfig); err != nil {
			return err
		}
		changed = true
	}
	if !changed {
		return usagef("app set: nothing to change (see \"admin app set -h\")")
	}

	cl, err := c.client()
	if err != nil {
		return err
	}
	app, err := cl.PatchApp(ctx, pos[0], req)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	if app == nil {
		_, err := fmt.Fprintf(c.stdout, "updated app %s\n", pos[0])
		return err
	}
	return c.printApp(app)
}

func appDelete(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP"), args, 1, 1)
	if err != nil {
		return err
	}
	if err := cl.DeleteApp(ctx, pos[0]); err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	_, err = fmt.Fprintf(c.stdout, "deleted app %s\n", pos[0])
	return err
}

func keyRotate(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP"), args, 1, 1)
	if err != nil {
		return err
	}
	k, err := cl.RotateKey(ctx, pos[0])
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout)
	t.row("api_key", k.APIKey)
	t.row("previous_valid_until", fmtTime(k.PreviousValidUntil))
	if err := t.flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stdout, "The new API key is shown only once: keep it now.")
	return err
}
