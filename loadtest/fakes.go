package main

import (
	"os"
	"path/filepath"
	"time"

	"tether/wake/waketest"
)

// fakes are the loopback APNs and FCM servers the app's push settings
// point at. Every push they accept is a wake: the harness records it and
// has the device connect, as the app would.
type fakes struct {
	apns   *waketest.APNs
	fcm    *waketest.FCM
	caFile string // the APNs fake's certificate, for --provider-ca-file
}

// startFakes starts both fakes with recording off (the hooks see every
// push) and writes the APNs certificate into dir.
func startFakes(dir string) (*fakes, error) {
	a, err := waketest.StartAPNs()
	if err != nil {
		return nil, err
	}
	f, err := waketest.StartFCM()
	if err != nil {
		a.Close()
		return nil, err
	}
	a.Record(false)
	f.Record(false)
	out := &fakes{apns: a, fcm: f, caFile: filepath.Join(dir, "apns-fake-ca.pem")}
	if err := os.WriteFile(out.caFile, a.CertificatePEM(), 0o644); err != nil {
		out.close()
		return nil, err
	}
	return out, nil
}

// onWake calls fn for every push either fake answers.
func (f *fakes) onWake(fn func(token string, at time.Time, status int, apns bool)) {
	f.apns.OnRequest(func(r waketest.APNsRequest) { fn(r.Token, r.At, r.Status, true) })
	f.fcm.OnRequest(func(r waketest.FCMRequest) { fn(r.Message.Token, r.At, r.Status, false) })
}

func (f *fakes) close() {
	f.apns.OnRequest(nil)
	f.fcm.OnRequest(nil)
	f.apns.Close()
	f.fcm.Close()
}
