package queue

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	messages *prometheus.CounterVec
	events   *prometheus.CounterVec
	// badEvents counts stored events the feed could not read and skipped.
	badEvents prometheus.Counter
	latency   prometheus.Histogram
	timers    *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_messages_total",
			Help: "Messages reaching each status (enqueued counts every recipient message accepted).",
		}, []string{"status"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_events_total",
			Help: "Events appended to app event feeds, by type.",
		}, []string{"type"}),
		badEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_events_unreadable_total",
			Help: "Stored events the feed could not decode and skipped (none unless the store is damaged).",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tether_delivery_latency_seconds",
			Help:    "Time from enqueue to the first device acknowledgement.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}),
		timers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_queue_timers_total",
			Help: "Queue timers fired, by kind (expire, fallback, status_gc, idempotency_gc).",
		}, []string{"kind"}),
	}
}

// Collectors returns the queue's Prometheus collectors, for the gateway to
// register.
func (q *Queue) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		q.m.messages, q.m.events, q.m.badEvents, q.m.latency, q.m.timers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tether_queue_depth",
			Help: "Messages waiting in all per-user queues.",
		}, func() float64 { return float64(q.Depth()) }),
	}
}
