package sdkproto_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("tether/session.(*poller).loop")) // the process-wide poller of idle sessions
}
