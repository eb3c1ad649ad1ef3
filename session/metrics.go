package session

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connections *prometheus.GaugeVec
	handshakes  *prometheus.CounterVec
	closes      *prometheus.CounterVec
	resumes     *prometheus.CounterVec
	messagesOut prometheus.Counter
	messagesIn  prometheus.Counter
	refused     *prometheus.CounterVec
	ackTimeouts prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tether_connections", Help: "Open device connections by transport (tls, starttls, websocket).",
		}, []string{"transport"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_handshakes_total", Help: "Session negotiations by transport and result (ok, tls_failed, auth_failed).",
		}, []string{"transport", "result"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_session_closes_total", Help: "Sessions ended, by reason.",
		}, []string{"reason"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_sm_resumes_total", Help: "XEP-0198 resumption attempts by result.",
		}, []string{"result"}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_session_messages_sent_total", Help: "Message stanzas written to devices (including resends).",
		}),
		messagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_session_messages_inbound_total", Help: "Inbound messages from devices stored.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_session_binds_refused_total", Help: "Binds refused by a session cap (user_cap, total_cap).",
		}, []string{"reason"}),
		ackTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_session_ack_timeouts_total", Help: "Connections counted lost because nothing came from the device within the ack timeout of an <r/>.",
		}),
	}
}

func (m *metrics) collectors(s *Server) []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.handshakes, m.closes, m.resumes, m.messagesOut, m.messagesIn, m.refused, m.ackTimeouts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tether_sessions", Help: "Bound device sessions (including ones detached and waiting for resumption).",
		}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.bound))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tether_sessions_parked", Help: "Idle TCP sessions with no reader goroutine, their sockets watched by the poller.",
		}, func() float64 { return float64(s.parked.Load()) }),
	}
}
