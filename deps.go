package tether

import (
	_ "firebase.google.com/go/v4"
	_ "github.com/cockroachdb/pebble/v2"
	_ "github.com/coder/websocket"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/sideshow/apns2"
	_ "go.uber.org/zap"
	_ "mellium.im/sasl"
	_ "mellium.im/xmpp"
	_ "github.com/stretchr/testify/require"
	_ "go.uber.org/goleak"
	_ "gopkg.in/yaml.v3"
)
