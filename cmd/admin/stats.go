package main

import (
	"context"
	"fmt"
	"time"
)

func stats(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "")
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	s, err := cl.Stats(ctx)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout)
	t.row("version", s.Version)
	t.row("uptime", (time.Duration(s.UptimeSeconds) * time.Second).String())
	t.row("apps", fmt.Sprint(s.Apps))
	t.row("queue_depth", fmt.Sprint(s.QueueDepth))
	t.row("sessions", fmtMap(s.Sessions))
	t.row("store.disk_bytes", fmt.Sprint(s.Store.DiskBytes))
	t.row("store.fsyncs", fmt.Sprint(s.Store.Fsyncs))
	t.row("store.wal_bytes", fmt.Sprint(s.Store.WALBytes))
	return t.flush()
}
