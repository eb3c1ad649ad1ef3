package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"tether/gateway/api"
	"tether/queue"
)

// principal is who a request authenticated as: the admin, or one app.
type principal struct {
	admin bool
	app   string
}

// authenticate reads the bearer token.
func (g *Gateway) authenticate(r *http.Request) (principal, *api.Error) {
	// The scheme is case-insensitive (RFC 9110 section 11.1).
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return principal{}, apiError(api.CodeUnauthenticated, "", "missing bearer token: send Authorization: Bearer <admin token or app API key>")
	}
	if constantTimeEqual(token, g.adminToken) {
		return principal{admin: true}, nil
	}
	if app, ok := g.apps.authenticate(token); ok {
		return principal{app: app}, nil
	}
	return principal{}, apiError(api.CodeUnauthenticated, "", "invalid or expired token")
}

// adminOnly wraps a handler that needs the admin token.
func (g *Gateway) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := g.authenticate(r)
		if err != nil {
			g.writeError(w, r, err)
			return
		}
		if !p.admin {
			g.writeError(w, r, apiError(api.CodePermissionDenied, "", "this endpoint needs the admin token"))
			return
		}
		h(w, r)
	}
}

// appHandler is a handler of an app-scoped route.
type appHandler func(w http.ResponseWriter, r *http.Request, app *appRecord)

// forApp wraps a handler of /v1/apps/{app}/...: the admin token reaches
// every app, an API key only its own; any other app answers 404, exactly
// as a missing one does.
func (g *Gateway) forApp(adminOnly bool, h appHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, aerr := g.authenticate(r)
		if aerr != nil {
			g.writeError(w, r, aerr)
			return
		}
		id := r.PathValue("app")
		if !p.admin && p.app != id {
			g.writeError(w, r, apiError(api.CodeNotFound, "app", "no app %q", truncate(id, 64)))
			return
		}
		if adminOnly && !p.admin {
			g.writeError(w, r, apiError(api.CodePermissionDenied, "", "this endpoint needs the admin token"))
			return
		}
		if !p.admin {
			if ok, wait := g.limiter.allow(id, g.cfg.Clock.Now()); !ok {
				g.rateLimited(w, r, wait)
				return
			}
		}
		app, ok := g.apps.get(id)
		if !ok {
			g.writeError(w, r, apiError(api.CodeNotFound, "app", "no app %q", truncate(id, 64)))
			return
		}
		h(w, r, app)
	}
}

// router is what routes needs of an *http.ServeMux (a test records the
// patterns to keep docs/openapi.yaml in step).
type router interface {
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
	Handle(pattern string, handler http.Handler)
}

// routes registers the REST API on mux.
func (g *Gateway) routes(mux router) {
	mux.HandleFunc("GET /healthz", g.healthz)
	mux.HandleFunc("GET /readyz", g.readyz)

	mux.HandleFunc("POST /v1/apps", g.adminOnly(g.createApp))
	mux.HandleFunc("GET /v1/apps", g.adminOnly(g.listApps))
	mux.HandleFunc("GET /v1/apps/{app}", g.forApp(false, g.getApp))
	mux.HandleFunc("PATCH /v1/apps/{app}", g.forApp(false, g.patchApp))
	mux.HandleFunc("DELETE /v1/apps/{app}", g.forApp(true, g.deleteApp))
	mux.HandleFunc("POST /v1/apps/{app}/keys", g.forApp(false, g.rotateKey))

	mux.HandleFunc("PUT /v1/apps/{app}/users/{user}", g.forApp(false, g.putUser))
	mux.HandleFunc("GET /v1/apps/{app}/users/{user}", g.forApp(false, g.getUser))
	mux.HandleFunc("DELETE /v1/apps/{app}/users/{user}", g.forApp(false, g.deleteUser))
	mux.HandleFunc("GET /v1/apps/{app}/users/{user}/devices", g.forApp(false, g.listDevices))
	mux.HandleFunc("PUT /v1/apps/{app}/users/{user}/devices/{device}", g.forApp(false, g.putDevice))
	mux.HandleFunc("DELETE /v1/apps/{app}/users/{user}/devices/{device}", g.forApp(false, g.deleteDevice))

	mux.HandleFunc("POST /v1/apps/{app}/messages", g.forApp(false, g.sendMessage))
	mux.HandleFunc("GET /v1/apps/{app}/messages/{id}", g.forApp(false, g.getMessage))
	mux.HandleFunc("DELETE /v1/apps/{app}/messages/{id}", g.forApp(false, g.cancelMessage))
	mux.HandleFunc("GET /v1/apps/{app}/events", g.forApp(false, g.events))

	mux.HandleFunc("GET /v1/stats", g.adminOnly(g.stats))
	mux.HandleFunc("GET /v1/device/messages", g.pullMessages)
	mux.HandleFunc("POST /v1/device/acks", g.pullAcks)
	mux.Handle("GET /xmpp-websocket", g.sessions)

	mux.HandleFunc("/", g.noRoute)
}

// noRoute answers what no route matched: 405 with Allow when the path
// exists under other methods, else 404; both in the API's error shape.
func (g *Gateway) noRoute(w http.ResponseWriter, r *http.Request) {
	if allow := g.allowedMethods(r); allow != "" {
		w.Header().Set("Allow", allow)
		g.writeError(w, r, apiError(api.CodeMethodNotAllowed, "", "%s is not allowed on %s (allowed: %s)", r.Method, truncate(r.URL.Path, 128), allow))
		return
	}
	g.writeError(w, r, apiError(api.CodeNotFound, "", "no such endpoint: %s %s", r.Method, truncate(r.URL.Path, 128)))
}

// allowedMethods lists the methods with a route for r's path.
func (g *Gateway) allowedMethods(r *http.Request) string {
	if g.mux == nil {
		return ""
	}
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pat := g.mux.Handler(probe); pat != "" && pat != "/" {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
	}
	return strings.Join(allow, ", ")
}

func (g *Gateway) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	if !g.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// --- apps -------------------------------------------------------------------

func (g *Gateway) appView(rec *appRecord) api.App {
	a := api.App{
		ID: rec.ID, Name: rec.Name, XMPPDomain: rec.ID + "." + g.cfg.Domain, CreatedAt: rec.CreatedAt,
		Defaults: rec.Defaults, ClientConfig: rec.ClientConfig,
	}
	if w := rec.Webhook; w != nil {
		a.Webhook = &api.WebhookView{URL: w.URL, Secret: api.Secret{Set: w.Secret != ""}}
	}
	if c := rec.APNS; c != nil {
		a.APNS = &api.APNSView{KeyP8: api.Secret{Set: c.KeyP8 != ""}, KeyID: c.KeyID, TeamID: c.TeamID, Topic: c.Topic,
			Environment: or(c.Environment, "production"), Wake: or(c.Wake, "alert"), AlertText: or(c.AlertText, "New message"), Endpoint: c.Endpoint}
	}
	if c := rec.FCM; c != nil {
		v := &api.FCMView{ServiceAccountJSON: api.Secret{Set: c.ServiceAccountJSON != ""}, Endpoint: c.Endpoint}
		var sa struct {
			ProjectID string `json:"project_id"`
		}
		if json.Unmarshal([]byte(c.ServiceAccountJSON), &sa) == nil {
			v.ProjectID = sa.ProjectID
		}
		a.FCM = v
	}
	if c := rec.SMS; c != nil {
		a.SMS = &api.SMSView{Provider: c.Provider, URL: c.URL, APIKey: api.Secret{Set: c.APIKey != ""}, APISecret: api.Secret{Set: c.APISecret != ""}, From: c.From}
	}
	return a
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (g *Gateway) createApp(w http.ResponseWriter, r *http.Request) {
	var req api.CreateAppRequest
	if err := g.decodeJSON(w, r, &req); err != nil {
		g.writeError(w, r, err)
		return
	}
	if !validApp(req.ID) {
		g.writeError(w, r, apiError(api.CodeInvalidArgument, "id", "app id must match ^[a-z0-9][a-z0-9-]{0,62}$"))
		return
	}
	if len(req.Name) > 200 {
		g.writeError(w, r, apiError(api.CodeInvalidArgument, "name", "name is longer than 200 bytes"))
		return
	}
	rec, key, err := g.apps.create(req.ID, req.Name)
	if errors.Is(err, errAppExists) {
		g.writeError(w, r, apiError(api.CodeConflict, "id", "app %q already exists", req.ID))
		return
	}
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	g.log.Info("app created", zapApp(rec.ID))
	v := g.appView(rec)
	v.APIKey = key
	writeJSON(w, http.StatusCreated, v)
}

func (g *Gateway) listApps(w http.ResponseWriter, r *http.Request) {
	out := []api.App{}
	for _, rec := range g.apps.list() {
		out = append(out, g.appView(rec))
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) getApp(w http.ResponseWriter, r *http.Request, app *appRecord) {
	writeJSON(w, http.StatusOK, g.appView(app))
}

func (g *Gateway) patchApp(w http.ResponseWriter, r *http.Request, app *appRecord) {
	var raw map[string]json.RawMessage
	var req api.PatchAppRequest
	buf, rerr := g.readBody(w, r)
	if rerr != nil {
		g.writeError(w, r, rerr)
		return
	}
	if err := decodeStrict(buf, &req); err != nil {
		g.writeError(w, r, err)
		return
	}
	json.Unmarshal(buf, &raw) // which settings were sent as null
	isNull := func(k string) bool { v, ok := raw[k]; return ok && string(v) == "null" }
	if err := validatePatch(&req); err != nil {
		g.writeError(w, r, err)
		return
	}
	rec, err := g.apps.update(app.ID, func(rec *appRecord) error {
		if req.Name != nil {
			rec.Name = *req.Name
		}
		// Each setting: null removes it, an object replaces it, keeping a
		// stored secret the request leaves empty.
		patchSetting(&rec.Webhook, req.Webhook, isNull("webhook"), func(n, o *api.WebhookConfig) {
			keep(&n.Secret, o.Secret)
		})
		patchSetting(&rec.APNS, req.APNS, isNull("apns"), func(n, o *api.APNSConfig) { keep(&n.KeyP8, o.KeyP8) })
		patchSetting(&rec.FCM, req.FCM, isNull("fcm"), func(n, o *api.FCMConfig) {
			keep(&n.ServiceAccountJSON, o.ServiceAccountJSON)
		})
		patchSetting(&rec.SMS, req.SMS, isNull("sms"), func(n, o *api.SMSConfig) {
			keep(&n.APIKey, o.APIKey)
			keep(&n.APISecret, o.APISecret)
		})
		if d := req.Defaults; d != nil {
			if d.ExpiresIn != nil {
				rec.Defaults.ExpiresIn = d.ExpiresIn
			}
			if d.WakeInterval != nil {
				rec.Defaults.WakeInterval = d.WakeInterval
			}
			if d.FallbackAfter != nil {
				rec.Defaults.FallbackAfter = d.FallbackAfter
			}
			if d.RejectUnknownUsers != nil {
				rec.Defaults.RejectUnknownUsers = d.RejectUnknownUsers
			}
		}
		switch {
		case isNull("client_config"):
			rec.ClientConfig = nil
		case req.ClientConfig != nil:
			rec.ClientConfig = req.ClientConfig
		}
		return nil
	})
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	g.onAppChange(rec)
	writeJSON(w, http.StatusOK, g.appView(rec))
}

// patchSetting applies one PATCH setting to *cur: null removes it; a new
// value replaces it, after keepOld copied what the request left empty from
// the stored one.
func patchSetting[T any](cur **T, req *T, null bool, keepOld func(n, o *T)) {
	switch {
	case null:
		*cur = nil
	case req != nil:
		n := *req
		if *cur != nil {
			keepOld(&n, *cur)
		}
		*cur = &n
	}
}

// keep sets an empty *dst to old: secrets are never shown, so a PATCH that
// changes other fields sends them empty.
func keep(dst *string, old string) {
	if *dst == "" {
		*dst = old
	}
}

func validatePatch(req *api.PatchAppRequest) *api.Error {
	if req.Name != nil && len(*req.Name) > 200 {
		return apiError(api.CodeInvalidArgument, "name", "name is longer than 200 bytes")
	}
	if wh := req.Webhook; wh != nil {
		if !validURL(wh.URL) {
			return apiError(api.CodeInvalidArgument, "webhook.url", "webhook.url must be an http or https URL")
		}
	}
	if c := req.APNS; c != nil {
		switch c.Environment {
		case "", "production", "sandbox":
		default:
			return apiError(api.CodeInvalidArgument, "apns.environment", `apns.environment must be "production" or "sandbox"`)
		}
		switch c.Wake {
		case "", "alert", "background":
		default:
			return apiError(api.CodeInvalidArgument, "apns.wake", `apns.wake must be "alert" or "background"`)
		}
		if c.KeyP8 != "" && !strings.Contains(c.KeyP8, "PRIVATE KEY") {
			return apiError(api.CodeInvalidArgument, "apns.key_p8", "apns.key_p8 must be the PEM text of the .p8 key")
		}
		if c.Endpoint != "" && !validURL(c.Endpoint) {
			return apiError(api.CodeInvalidArgument, "apns.endpoint", "apns.endpoint must be an http or https URL")
		}
	}
	if c := req.FCM; c != nil {
		if c.ServiceAccountJSON != "" && !json.Valid([]byte(c.ServiceAccountJSON)) {
			return apiError(api.CodeInvalidArgument, "fcm.service_account_json", "fcm.service_account_json must be the service account's JSON")
		}
		if c.Endpoint != "" && !validURL(c.Endpoint) {
			return apiError(api.CodeInvalidArgument, "fcm.endpoint", "fcm.endpoint must be an http or https URL")
		}
	}
	if c := req.SMS; c != nil {
		switch c.Provider {
		case "http":
			if !validURL(c.URL) {
				return apiError(api.CodeInvalidArgument, "sms.url", "sms.url is required for the http provider")
			}
		case "vonage":
			if c.URL != "" && !validURL(c.URL) {
				return apiError(api.CodeInvalidArgument, "sms.url", "sms.url must be an http or https URL")
			}
		default:
			return apiError(api.CodeInvalidArgument, "sms.provider", `sms.provider must be "http" or "vonage"`)
		}
	}
	if d := req.Defaults; d != nil {
		if d.ExpiresIn != nil && (*d.ExpiresIn < 0 || *d.ExpiresIn > maxExpiresIn) {
			return apiError(api.CodeInvalidArgument, "defaults.expires_in", "defaults.expires_in must be from 0 to %d", maxExpiresIn)
		}
		if d.WakeInterval != nil && (*d.WakeInterval < 1 || *d.WakeInterval > 1800) {
			return apiError(api.CodeInvalidArgument, "defaults.wake_interval", "defaults.wake_interval must be from 1 to 1800 seconds")
		}
		for k, v := range d.FallbackAfter {
			if k != "high" && k != "normal" {
				return apiError(api.CodeInvalidArgument, "defaults.fallback_after", `defaults.fallback_after keys are "high" and "normal"`)
			}
			if v < 0 || v > maxExpiresIn {
				return apiError(api.CodeInvalidArgument, "defaults.fallback_after", "defaults.fallback_after values must be from 0 to %d", maxExpiresIn)
			}
		}
	}
	if len(req.ClientConfig) > maxClientConfigSize {
		return apiError(api.CodePayloadTooLarge, "client_config", "client_config is larger than %d bytes", maxClientConfigSize)
	}
	return nil
}

func validURL(s string) bool {
	return (strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")) && len(s) > len("https://") && len(s) < 2048
}

func (g *Gateway) deleteApp(w http.ResponseWriter, r *http.Request, app *appRecord) {
	if err := g.apps.remove(app.ID); err != nil {
		g.writeError(w, r, err)
		return
	}
	if err := g.q.DropApp(r.Context(), app.ID); err != nil {
		g.writeError(w, r, err)
		return
	}
	g.sessions.KickApp(app.ID)
	if w := g.waker; w != nil {
		w.forget(app.ID, "")
	}
	g.webhooks.sync()
	g.log.Info("app deleted", zapApp(app.ID))
	w.WriteHeader(http.StatusNoContent)
}

func (g *Gateway) rotateKey(w http.ResponseWriter, r *http.Request, app *appRecord) {
	key, until, err := g.apps.rotate(app.ID)
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.KeyResponse{APIKey: key, PreviousValidUntil: until})
}

// --- users and devices ------------------------------------------------------

func (g *Gateway) userParam(r *http.Request) (string, *api.Error) {
	u := r.PathValue("user")
	if !validUser(u) {
		return "", apiError(api.CodeInvalidArgument, "user", "user id must match ^[A-Za-z0-9+][A-Za-z0-9._+=-]{0,127}$")
	}
	return u, nil
}

// deviceParams returns the {user} and {device} path values, or the error
// that says which is malformed.
func (g *Gateway) deviceParams(r *http.Request) (user, device string, aerr *api.Error) {
	if user, aerr = g.userParam(r); aerr != nil {
		return "", "", aerr
	}
	device = r.PathValue("device")
	if !validDevice(device) {
		return "", "", apiError(api.CodeInvalidArgument, "device", "device id must match ^[A-Za-z0-9._-]{1,64}$")
	}
	return user, device, nil
}

// userExists answers 404 (or the store's error) and reports false when
// app has no user user.
func (g *Gateway) userExists(w http.ResponseWriter, r *http.Request, app *appRecord, user string) bool {
	_, err := g.users.get(app.ID, user)
	switch {
	case errors.Is(err, errNoUser):
		g.writeError(w, r, apiError(api.CodeNotFound, "user", "no user %q", user))
		return false
	case err != nil:
		g.writeError(w, r, err)
		return false
	}
	return true
}

func (g *Gateway) jid(app, user string) string { return user + "@" + app + "." + g.cfg.Domain }

func (g *Gateway) putUser(w http.ResponseWriter, r *http.Request, app *appRecord) {
	user, aerr := g.userParam(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	var req api.PutUserRequest
	if r.ContentLength != 0 {
		if err := g.decodeJSON(w, r, &req); err != nil {
			g.writeError(w, r, err)
			return
		}
	}
	generated := req.Password == ""
	if generated {
		req.Password = generatePassword()
	} else if len(req.Password) < minPasswordLen || len(req.Password) > maxPasswordLen {
		g.writeError(w, r, apiError(api.CodeInvalidArgument, "password", "password must be %d to %d bytes", minPasswordLen, maxPasswordLen))
		return
	}
	old, err := g.users.get(app.ID, user)
	if err != nil && !errors.Is(err, errNoUser) {
		g.writeError(w, r, err)
		return
	}
	rec := newUserRecord(req.Password, g.cfg.Clock.Now().UTC())
	status := http.StatusCreated
	if old != nil {
		rec.CreatedAt, status = old.CreatedAt, http.StatusOK
	}
	if err := g.users.put(app.ID, user, rec); err != nil {
		g.writeError(w, r, err)
		return
	}
	out := api.User{User: user, JID: g.jid(app.ID, user), CreatedAt: rec.CreatedAt}
	if generated {
		out.Password = req.Password
	}
	writeJSON(w, status, out)
}

func (g *Gateway) getUser(w http.ResponseWriter, r *http.Request, app *appRecord) {
	user, aerr := g.userParam(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	rec, err := g.users.get(app.ID, user)
	if errors.Is(err, errNoUser) {
		g.writeError(w, r, apiError(api.CodeNotFound, "user", "no user %q", user))
		return
	}
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.User{User: user, JID: g.jid(app.ID, user), CreatedAt: rec.CreatedAt})
}

func (g *Gateway) deleteUser(w http.ResponseWriter, r *http.Request, app *appRecord) {
	user, aerr := g.userParam(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	if !g.userExists(w, r, app, user) {
		return
	}
	if err := g.q.DropUser(r.Context(), app.ID, user); err != nil {
		g.writeError(w, r, err)
		return
	}
	g.onUserDeleted(app.ID, user)
	w.WriteHeader(http.StatusNoContent)
}

// deviceView is d as the REST API shows it. Online is whether the device
// takes messages now: a session that has sent its initial presence (kept
// through a resume window) or an HTTP long poll, the same test an
// expires_in 0 message makes. A session bound but without presence yet is
// not online: nothing is delivered to it.
func (g *Gateway) deviceView(app, user string, d *queue.Device) api.Device {
	v := api.Device{Device: d.ID, Online: g.q.Online(app, user, d.ID), Transport: d.Transport, LastSeen: d.LastSeen}
	if p := d.Push; p != nil {
		suffix := p.Token
		if len(suffix) > 6 {
			suffix = suffix[len(suffix)-6:]
		}
		v.Push = &api.PushView{Provider: p.Provider, TokenSuffix: suffix}
	}
	return v
}

func (g *Gateway) listDevices(w http.ResponseWriter, r *http.Request, app *appRecord) {
	user, aerr := g.userParam(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	if !g.userExists(w, r, app, user) {
		return
	}
	devs, err := g.q.Devices(r.Context(), app.ID, user)
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	out := make([]api.Device, 0, len(devs))
	for i := range devs {
		out = append(out, g.deviceView(app.ID, user, &devs[i]))
	}
	writeJSON(w, http.StatusOK, out)
}

func validatePush(p *api.PushRegistration) *api.Error {
	switch p.Provider {
	case "apns", "fcm":
	default:
		return apiError(api.CodeInvalidArgument, "push.provider", `push.provider must be "apns" or "fcm"`)
	}
	if p.Token == "" || len(p.Token) > maxPushTokenLen || strings.ContainsFunc(p.Token, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return apiError(api.CodeInvalidArgument, "push.token", "push.token must be 1 to %d printable characters", maxPushTokenLen)
	}
	switch p.Environment {
	case "", "production", "sandbox":
	default:
		return apiError(api.CodeInvalidArgument, "push.environment", `push.environment must be "production" or "sandbox"`)
	}
	if len(p.Topic) > 255 {
		return apiError(api.CodeInvalidArgument, "push.topic", "push.topic is longer than 255 bytes")
	}
	return nil
}

func (g *Gateway) putDevice(w http.ResponseWriter, r *http.Request, app *appRecord) {
	user, device, aerr := g.deviceParams(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	var req api.PutDeviceRequest
	if r.ContentLength != 0 {
		if err := g.decodeJSON(w, r, &req); err != nil {
			g.writeError(w, r, err)
			return
		}
	}
	if req.Push != nil {
		if err := validatePush(req.Push); err != nil {
			g.writeError(w, r, err)
			return
		}
		if !(directory{g}).PushAllowed(app.ID, req.Push.Provider, req.Push.Token) {
			g.writeError(w, r, apiError(api.CodeInvalidArgument, "push.token", "the provider reported this token invalid; register the device's new token"))
			return
		}
	}
	if !g.userExists(w, r, app, user) {
		return
	}
	ref := queue.DeviceRef{App: app.ID, User: user, Device: device}
	var saved queue.Device
	created, err := g.q.UpdateDevice(r.Context(), ref, func(d *queue.Device) *queue.Device {
		if d == nil {
			d = &queue.Device{ID: device}
		}
		d.Push = nil
		if p := req.Push; p != nil {
			d.Push = &queue.PushRegistration{Provider: p.Provider, Token: p.Token, Topic: p.Topic, Environment: p.Environment}
		}
		saved = *d
		return d
	})
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	saved.ID = device
	if cur, err := g.q.Device(r.Context(), ref); err == nil {
		saved = *cur
	}
	if req.Push != nil && g.waker != nil {
		// A new token (after the old one was reported invalid, say): if
		// messages wait for the device and it does not come online, the
		// waker wakes it through the new token after the grace, rather
		// than at the next message.
		g.waker.lost(wakeKey{app.ID, user, device})
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, g.deviceView(app.ID, user, &saved))
}

func (g *Gateway) deleteDevice(w http.ResponseWriter, r *http.Request, app *appRecord) {
	user, device, aerr := g.deviceParams(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	existed, err := g.q.DeleteDevice(r.Context(), queue.DeviceRef{App: app.ID, User: user, Device: device})
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	if !existed {
		g.writeError(w, r, apiError(api.CodeNotFound, "device", "no device %q for user %q", device, user))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// --- messages and events ----------------------------------------------------

func (g *Gateway) sendMessage(w http.ResponseWriter, r *http.Request, app *appRecord) {
	idem := r.Header.Get("Idempotency-Key")
	if len(idem) > maxIdempotencyKey {
		g.writeError(w, r, apiError(api.CodeInvalidArgument, "Idempotency-Key", "Idempotency-Key is longer than %d bytes", maxIdempotencyKey))
		return
	}
	bp := bodyPool.Get()
	raw, rerr := g.readBodyInto(w, r, *bp)
	defer func() {
		// Nothing refers to raw now: the request was decoded into copies.
		if raw != nil {
			*bp = raw
		}
		bodyPool.Put(bp)
	}()
	if rerr != nil {
		g.writeError(w, r, rerr)
		return
	}
	var claim *queue.IdemClaim
	if idem != "" {
		// A repeat gets the first answer, whatever changed since; a first
		// request keeps the key locked until it is enqueued or refused.
		res, c, err := g.q.ClaimIdempotency(app.ID, idem, sha256.Sum256(raw))
		if err != nil || res != nil {
			g.sendAnswer(w, r, res, err)
			return
		}
		claim = c
		defer claim.Release()
	}
	var req api.SendRequest
	if err := decodeStrict(raw, &req); err != nil {
		g.writeError(w, r, err)
		return
	}
	qr, aerr := g.buildEnqueue(app, &req)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	if app.Defaults.RejectUnknownUsers != nil && *app.Defaults.RejectUnknownUsers {
		for _, rc := range qr.To {
			if _, err := g.users.get(app.ID, rc.User); errors.Is(err, errNoUser) {
				g.writeError(w, r, apiError(api.CodeNotFound, "to", "no user %q (the app rejects unknown users)", rc.User))
				return
			} else if err != nil {
				g.writeError(w, r, err)
				return
			}
		}
	}
	qr.Claim = claim
	res, err := g.q.Enqueue(r.Context(), qr)
	// expires_in 0 is for the devices online now: a wake could only come
	// too late.
	if err == nil && !res.Replayed && qr.ExpiresIn > 0 {
		g.waker.enqueuedAsync(app.ID, qr.To, qr.Priority, g.cfg.Clock.Now().Add(qr.ExpiresIn))
	}
	g.sendAnswer(w, r, res, err)
}

// sendAnswer writes the answer of an enqueue (or of its replay).
func (g *Gateway) sendAnswer(w http.ResponseWriter, r *http.Request, res *queue.EnqueueResult, err error) {
	switch {
	case errors.Is(err, queue.ErrIdempotencyMismatch):
		g.writeError(w, r, apiError(api.CodeConflict, "Idempotency-Key", "Idempotency-Key was already used for a different request"))
		return
	case errors.Is(err, queue.ErrInvalid):
		g.writeError(w, r, apiError(api.CodeInvalidArgument, "", "%v", err))
		return
	case err != nil:
		g.writeError(w, r, err)
		return
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	// api.SendResponse, encoded without reflection: the answer to every
	// POST, where json.Marshal was 2 % of what the gateway allocated in the
	// soak.
	bp := bodyPool.Get()
	*bp = res.AppendJSON(*bp)
	writeJSONBody(w, http.StatusAccepted, *bp)
	bodyPool.Put(bp)
}

func statusView(st *queue.Status) api.MessageStatus {
	v := api.MessageStatus{
		ID: st.ID, To: st.To(), Status: st.Status.String(), Ref: st.Ref, Reason: st.Reason,
		CreatedAt: st.CreatedAt, ExpiresAt: st.ExpiresAt,
		SentAt: timePtr(st.SentAt), DeliveredAt: timePtr(st.DeliveredAt), ReadAt: timePtr(st.ReadAt),
		Devices: make([]api.DeviceStatus, 0, len(st.Devices)),
	}
	for _, d := range st.Devices {
		v.Devices = append(v.Devices, api.DeviceStatus{Device: d.Device, Status: d.Status.String(), At: d.At})
	}
	if f := st.Fallback; f != nil {
		v.Fallback = &api.Fallback{To: f.To, Status: f.PublicStatus(), At: f.At, Provider: f.Provider, Detail: f.Detail, Attempts: f.Attempts}
	}
	return v
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (g *Gateway) getMessage(w http.ResponseWriter, r *http.Request, app *appRecord) {
	st, err := g.q.Status(r.Context(), app.ID, r.PathValue("id"))
	if errors.Is(err, queue.ErrNotFound) {
		g.writeError(w, r, apiError(api.CodeNotFound, "id", "no message %q", truncate(r.PathValue("id"), 64)))
		return
	}
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statusView(st))
}

func (g *Gateway) cancelMessage(w http.ResponseWriter, r *http.Request, app *appRecord) {
	st, err := g.q.Cancel(r.Context(), app.ID, r.PathValue("id"))
	switch {
	case errors.Is(err, queue.ErrNotFound):
		g.writeError(w, r, apiError(api.CodeNotFound, "id", "no message %q", truncate(r.PathValue("id"), 64)))
	case errors.Is(err, queue.ErrFinal):
		g.writeError(w, r, apiError(api.CodeConflict, "id", "message is already %s", st.Status))
	case errors.Is(err, queue.ErrHandingOver):
		g.writeError(w, r, apiError(api.CodeConflict, "id", "the message's SMS fallback is being handed to the provider, which may have taken it; its outcome follows"))
	case err != nil:
		g.writeError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, statusView(st))
	}
}

func (g *Gateway) events(w http.ResponseWriter, r *http.Request, app *appRecord) {
	var after uint64
	if s := r.URL.Query().Get("after"); s != "" {
		v, err := queue.ParseEventID(s)
		if err != nil {
			g.writeError(w, r, apiError(api.CodeInvalidArgument, "after", "after must be a cursor returned as next"))
			return
		}
		after = v
	}
	limit, aerr := queryInt(r, "limit", 100, 1, 1000)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	wait, aerr := queryInt(r, "wait", 0, 0, 60)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	// A shutdown ends the wait: the poll answers with what there is.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(g.draining, cancel)()
	evs, next, err := g.q.Events(ctx, app.ID, after, int(limit), time.Duration(wait)*time.Second)
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	if evs == nil {
		evs = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, api.EventsResponse{Events: evs, Next: queue.EventID(next)})
}

func (g *Gateway) stats(w http.ResponseWriter, r *http.Request) {
	s := g.db.Stats()
	writeJSON(w, http.StatusOK, api.Stats{
		Version:       Version,
		UptimeSeconds: int64(time.Since(g.started).Seconds()),
		Apps:          g.apps.count(),
		QueueDepth:    g.q.Depth(),
		Sessions:      g.sessionCounts(),
		Store:         api.StoreStats{DiskBytes: s.DiskBytes, Fsyncs: s.Fsyncs, WALBytes: s.WALBytes},
	})
}
