package main

import (
	"context"
	"fmt"

	"tether/gateway/api"
)

func userCreate(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "APP USER [--password PASSWORD]")
	password := fs.String("password", "", "the user's `password` (default: generated and printed once)")
	pos, cl, err := c.begin(fs, args, 2, 2)
	if err != nil {
		return err
	}
	u, err := cl.PutUser(ctx, pos[0], pos[1], api.PutUserRequest{Password: *password})
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout)
	t.row("user", u.User)
	t.row("jid", u.JID)
	if u.Password != "" {
		t.row("password", u.Password)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if u.Password != "" && *password == "" {
		_, err = fmt.Fprintln(c.stdout, "The generated password is shown only once: keep it now.")
	}
	return err
}

func userShow(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP USER"), args, 2, 2)
	if err != nil {
		return err
	}
	u, err := cl.GetUser(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout)
	t.row("user", u.User)
	t.row("jid", u.JID)
	t.row("created_at", fmtTime(u.CreatedAt))
	return t.flush()
}

func userDelete(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP USER"), args, 2, 2)
	if err != nil {
		return err
	}
	if err := cl.DeleteUser(ctx, pos[0], pos[1]); err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	_, err = fmt.Fprintf(c.stdout, "deleted user %s of app %s\n", pos[1], pos[0])
	return err
}

func deviceList(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP USER"), args, 2, 2)
	if err != nil {
		return err
	}
	devs, err := cl.ListDevices(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	return printDevices(c, devs)
}

func printDevices(c *cli, devs []api.Device) error {
	t := newTable(c.stdout, "DEVICE", "ONLINE", "TRANSPORT", "LAST SEEN", "PUSH")
	for _, d := range devs {
		push := ""
		if d.Push != nil {
			push = d.Push.Provider + " …" + d.Push.TokenSuffix
		}
		t.row(d.Device, yesNo(d.Online), d.Transport, fmtTime(d.LastSeen), push)
	}
	return t.flush()
}

func deviceRegister(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "APP USER DEVICE --provider apns|fcm --token TOKEN [--topic TOPIC] [--environment ENV]")
	provider := fs.String("provider", "", "push `provider`: apns or fcm")
	token := fs.String("token", "", "the device's push `token`")
	topic := fs.String("topic", "", "APNs `topic` (default: the app's)")
	environment := fs.String("environment", "", "APNs `environment`: production or sandbox")
	pos, err := c.parse(fs, args, 3, 3)
	if err != nil {
		return err
	}
	var req api.PutDeviceRequest
	if *provider != "" || *token != "" || *topic != "" || *environment != "" {
		if *provider == "" || *token == "" {
			return usagef("device register: --provider and --token go together")
		}
		req.Push = &api.PushRegistration{Provider: *provider, Token: *token, Topic: *topic, Environment: *environment}
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	d, err := cl.PutDevice(ctx, pos[0], pos[1], pos[2], req)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	if d == nil {
		_, err = fmt.Fprintf(c.stdout, "registered device %s of user %s in app %s\n", pos[2], pos[1], pos[0])
		return err
	}
	return printDevices(c, []api.Device{*d})
}

func deviceDelete(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP USER DEVICE"), args, 3, 3)
	if err != nil {
		return err
	}
	if err := cl.DeleteDevice(ctx, pos[0], pos[1], pos[2]); err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	_, err = fmt.Fprintf(c.stdout, "deleted device %s of user %s in app %s\n", pos[2], pos[1], pos[0])
	return err
}
