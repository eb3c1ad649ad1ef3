package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"tether/gateway/api"
)

const defaultURL = "http://127.0.0.1:8080"

const usage = `Usage: admin [global flags] COMMAND [ARGS] [FLAGS]

Apps (admin token):
  app create ID [--name NAME]
  app list
  app show APP
  app set APP [--name NAME]
              [--webhook-url URL] [--webhook-secret SECRET]
              [--apns-key-file KEY.p8] [--apns-key-id ID] [--apns-team-id ID]
              [--apns-topic TOPIC] [--apns-environment production|sandbox]
              [--apns-wake alert|background] [--apns-alert-text TEXT] [--apns-endpoint URL]
              [--fcm-service-account-file FILE.json] [--fcm-endpoint URL]
              [--sms-provider http|vonage] [--sms-url URL] [--sms-api-key KEY]
              [--sms-api-secret SECRET] [--sms-from FROM]
              [--expires-in SECONDS] [--wake-interval SECONDS]
              [--fallback-after-high SECONDS] [--fallback-after-normal SECONDS]
              [--reject-unknown-users[=false]] [--client-config JSON|@FILE]
              (each of webhook, apns, fcm and sms given replaces that whole setting)
  app delete APP
  key rotate APP

Users and devices (the app's API key or the admin token):
  user create APP USER [--password PASSWORD]
  user show APP USER
  user delete APP USER
  device list APP USER
  device register APP USER DEVICE --provider apns|fcm --token TOKEN
                  [--topic TOPIC] [--environment production|sandbox]
  device delete APP USER DEVICE

Messages and events (the app's API key or the admin token):
  send APP USER[/DEVICE]... [--body TEXT] [--data JSON|@FILE]
       [--expires-in SECONDS] [--priority high|normal]
       [--sms-to NUMBER [--sms-text TEXT] [--sms-after SECONDS]]
       [--ref REF] [--channel CHANNEL] [--collapse-key KEY]
       [--delivery all|any] [--idempotency-key KEY]
  status APP MSGID
  cancel APP MSGID
  events APP [--after CURSOR] [--limit N] [--wait SECONDS] [--follow]
       (--follow long-polls with --wait 30 until interrupted)

Node (admin token):
  stats

Global flags (before or after the command):
  -o, --output table|json   json prints the server's JSON answer as is
                            (nothing for an empty answer such as a delete;
                            events --follow: one event per line)
  --url URL                 gateway base URL (default $TETHER_URL, else ` + defaultURL + `)
  --data-dir DIR            read the admin token from DIR/admin-token
  --api-key KEY             authenticate with an app's API key

Environment:
  TETHER_URL           gateway base URL
  TETHER_ADMIN_TOKEN   admin bearer token
  TETHER_DATA_DIR      gateway data dir, read for admin-token when no token is set
  TETHER_API_KEY       app API key, used when no admin token is available

Flags may follow the positional arguments. Run "admin COMMAND -h" for a
command's flags. Exit status: 0 ok, 1 error (printed to stderr), 2 usage.
`

// globals are the flags every command accepts.
type globals struct {
	output  string
	url     string
	dataDir string
	apiKey  string
}

// register adds the global flags to fs, keeping their current values as
// defaults so that flags given before the command survive.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.output, "o", g.output, "output `format`: table or json")
	fs.StringVar(&g.output, "output", g.output, "output `format`: table or json")
	fs.StringVar(&g.url, "url", g.url, "gateway base `URL`")
	fs.StringVar(&g.dataDir, "data-dir", g.dataDir, "read the admin token from `DIR`/admin-token")
	fs.StringVar(&g.apiKey, "api-key", g.apiKey, "authenticate with an app's API `key`")
}

// cli is one invocation of the command.
type cli struct {
	stdout, stderr io.Writer
	env            func(string) string
	g              globals
	rec            *recorder
	synopses       map[*flag.FlagSet]string // command synopsis by flag set, for errors
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run executes one command line (without the program name) and returns
// the exit status. It is main without the process: tests drive it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	c := &cli{stdout: stdout, stderr: stderr, env: env}
	top := flag.NewFlagSet("admin", flag.ContinueOnError)
	top.SetOutput(stderr)
	top.Usage = func() { fmt.Fprint(stderr, usage) }
	c.g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	args = top.Args()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	err := c.dispatch(ctx, args)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "admin: %s\nRun \"admin help\" for usage.\n", ue.msg)
		return 2
	case errors.Is(err, errFlagParse):
		return 2 // the flag package already printed the problem
	default:
		fmt.Fprintf(stderr, "admin: %s\n", describe(err))
		return 1
	}
}

// describe formats an error for stderr: a server error with its code,
// message, field and HTTP status.
func describe(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		s := ae.Code + ": " + ae.Message
		if ae.Field != "" {
			s += " (field " + ae.Field + ")"
		}
		if ae.Status != 0 {
			s += fmt.Sprintf(" [HTTP %d]", ae.Status)
		}
		return s
	}
	return err.Error()
}

type handler func(c *cli, ctx context.Context, name string, args []string) error

// commands maps "group verb" (or a single word) to its handler.
var commands = map[string]handler{
	"app create":      appCreate,
	"app list":        appList,
	"app show":        appShow,
	"app set":         appSet,
	"app delete":      appDelete,
	"key rotate":      keyRotate,
	"user create":     userCreate,
	"user show":       userShow,
	"user delete":     userDelete,
	"device list":     deviceList,
	"device register": deviceRegister,
	"device delete":   deviceDelete,
	"send":            send,
	"status":          status,
	"cancel":          cancel,
	"events":          events,
	"stats":           stats,
}

var groups = map[string]bool{"app": true, "key": true, "user": true, "device": true}

func (c *cli) dispatch(ctx context.Context, args []string) error {
	name, rest := args[0], args[1:]
	if name == "help" {
		fmt.Fprint(c.stdout, usage)
		return nil
	}
	if groups[name] {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return usagef("%s: missing subcommand", name)
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	h, ok := commands[name]
	if !ok {
		return usagef("unknown command %q", name)
	}
	return h(c, ctx, name, rest)
}

// errFlagParse reports that the flag package rejected the command line and
// has already said why.
var errFlagParse = errors.New("bad flags")

// flags returns a FlagSet for command name with the global flags added.
// synopsis is the command's argument summary for its -h text.
func (c *cli) flags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("admin "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: admin %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	c.g.register(fs)
	if c.synopses == nil {
		c.synopses = map[*flag.FlagSet]string{}
	}
	c.synopses[fs] = strings.TrimSpace(name + " " + synopsis)
	return fs
}

// parse parses args with fs (flags may be interleaved) and checks the
// number of positional arguments: at least min, at most max (-1: any).
func (c *cli) parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errFlagParse
	}
	if c.g.output != "" && c.g.output != "table" && c.g.output != "json" {
		return nil, usagef("unknown output format %q (want table or json)", c.g.output)
	}
	switch {
	case len(pos) < min:
		return nil, usagef("%s: missing arguments (usage: admin %s)", strings.TrimPrefix(fs.Name(), "admin "), c.synopses[fs])
	case max >= 0 && len(pos) > max:
		return nil, usagef("%s: unexpected argument %q", strings.TrimPrefix(fs.Name(), "admin "), pos[max])
	}
	return pos, nil
}

// json reports whether output is JSON.
func (c *cli) json() bool { return c.g.output == "json" }

// client returns an API client for the configured URL and credentials.
// begin is the start of every command: parse its flags and arguments,
// then make the API client.
func (c *cli) begin(fs *flag.FlagSet, args []string, min, max int) ([]string, *api.Client, error) {
	pos, err := c.parse(fs, args, min, max)
	if err != nil {
		return nil, nil, err
	}
	cl, err := c.client()
	return pos, cl, err
}

func (c *cli) client() (*api.Client, error) {
	tok, err := c.token()
	if err != nil {
		return nil, err
	}
	base := c.g.url
	if base == "" {
		base = c.env("TETHER_URL")
	}
	if base == "" {
		base = defaultURL
	}
	cl := api.NewClient(base, tok)
	cl.UserAgent = "tether-admin/1"
	c.rec = &recorder{base: http.DefaultTransport}
	cl.HTTP = &http.Client{Transport: c.rec}
	return cl, nil
}

// token picks the bearer token: --api-key, then the admin token (--data-dir,
// TETHER_ADMIN_TOKEN, $TETHER_DATA_DIR/admin-token), then TETHER_API_KEY.
func (c *cli) token() (string, error) {
	if c.g.apiKey != "" {
		return c.g.apiKey, nil
	}
	if c.g.dataDir != "" {
		return readToken(c.g.dataDir)
	}
	if t := c.env("TETHER_ADMIN_TOKEN"); t != "" {
		return t, nil
	}
	if dir := c.env("TETHER_DATA_DIR"); dir != "" {
		t, err := readToken(dir)
		if err == nil {
			return t, nil
		}
		if !errors.Is(err, iofs.ErrNotExist) {
			return "", err
		}
	}
	if k := c.env("TETHER_API_KEY"); k != "" {
		return k, nil
	}
	return "", errors.New("no credentials: set TETHER_ADMIN_TOKEN, pass --data-dir DIR (reads DIR/admin-token), or set TETHER_API_KEY / --api-key")
}

func readToken(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("read admin token: %s is empty", filepath.Join(dir, "admin-token"))
	}
	return t, nil
}

// printRaw prints the last answer's JSON body, indented. An empty answer
// (e.g. 204 No Content) prints nothing.
func (c *cli) printRaw() error {
	body := bytes.TrimSpace(c.rec.last)
	if len(body) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Indent(&b, body, "", "  "); err != nil {
		b.Reset()
		b.Write(body)
	}
	b.WriteByte('\n')
	_, err := c.stdout.Write(b.Bytes())
	return err
}

// recorder is an http.RoundTripper that keeps the last answer's body, so
// that -o json can print exactly what the server said.
type recorder struct {
	base http.RoundTripper
	last []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	r.last = body
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// readJSONArg returns a flag's JSON value, read from FILE when written as
// @FILE, and checks that it is valid JSON before any request is made.
func readJSONArg(flagName, v string) (json.RawMessage, error) {
	b := []byte(v)
	if strings.HasPrefix(v, "@") {
		var err error
		if b, err = os.ReadFile(v[1:]); err != nil {
			return nil, fmt.Errorf("--%s: %w", flagName, err)
		}
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		var x any
		err := json.Unmarshal(b, &x)
		return nil, usagef("--%s: invalid JSON: %v", flagName, err)
	}
	return json.RawMessage(b), nil
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}
