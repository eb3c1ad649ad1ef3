package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tether.yaml")
	require.NoError(t, os.WriteFile(file, []byte("domain: from-file.example\nhttp-addr: 127.0.0.1:7001\nxmpp-addr: 127.0.0.1:7002\ndev: true\n"), 0o600))
	o, err := parseFlags([]string{"--config", file, "--xmpp-addr", "127.0.0.1:7003"},
		env(map[string]string{"TETHER_HTTP_ADDR": "127.0.0.1:7004", "TETHER_HTTPS_ADDR": ""}))
	require.NoError(t, err)
	require.Equal(t, "from-file.example", o.cfg.Domain, "file")
	require.Equal(t, "127.0.0.1:7004", o.cfg.HTTPAddr, "env beats file")
	require.Equal(t, "127.0.0.1:7003", o.cfg.XMPPAddr, "flag beats file")
	require.Equal(t, "", o.cfg.HTTPSAddr, "an empty env value disables a listener")
	require.Equal(t, ":5223", o.cfg.XMPPSAddr, "default")
	require.True(t, o.cfg.Dev)

	var b strings.Builder
	o.print(&b)
	require.Contains(t, b.String(), "domain: from-file.example   # file")
	require.Contains(t, b.String(), "http-addr: 127.0.0.1:7004   # env TETHER_HTTP_ADDR")
	require.Contains(t, b.String(), "dev: true   # file")
}

func TestCheckConfigReportsEveryError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(file, []byte("domain: Not_A_Domain!\nbogus: 1\nadmin-token: short\nhttp-addr: nohost\n"), 0o600))
	_, err := parseFlags([]string{"--config", file, "--log-level", "loud", "--gc-percent", "lots", "--procs", "many"}, env(nil))
	require.Error(t, err)
	for _, want := range []string{`unknown key "bogus"`, "domain", "admin-token", "http-addr", "log-level", `gc-percent: "lots" is not an integer`, `procs: "many" is not an integer`} {
		require.Contains(t, err.Error(), want)
	}
	for in, want := range map[string]int{"0": 0, "75": 75, "-1": -1, "-20": -1} {
		o, err := parseFlags([]string{"--gc-percent", in}, env(nil))
		require.NoError(t, err, in)
		require.Equal(t, want, o.cfg.GCPercent, in)
	}
	for in, want := range map[string]int{"0": 0, "4": 4, "-1": -1, "-8": -1} {
		o, err := parseFlags([]string{"--procs", in}, env(nil))
		require.NoError(t, err, in)
		require.Equal(t, want, o.cfg.Procs, in)
	}
	o, err := parseFlags(nil, env(map[string]string{"TETHER_PROCS": "6"}))
	require.NoError(t, err)
	require.Equal(t, 6, o.cfg.Procs)
	o, err = parseFlags([]string{"--admin-token", "a-secret-admin-token", "--print-config"}, env(nil))
	require.NoError(t, err)
	var b strings.Builder
	o.print(&b)
	require.NotContains(t, b.String(), "a-secret-admin-token")
}
