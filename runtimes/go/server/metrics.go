package main

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// funcMetrics exports the Kubeless metric families (same names, help and `method` label as the
// legacy Go runtime). Kept as plain numbers so they survive an in-place restart.
type methodStats struct {
	Calls    float64  `json:"calls"`
	Failures float64  `json:"failures"`
	Count    uint64   `json:"count"`
	Sum      float64  `json:"sum"`
	Buckets  []uint64 `json:"buckets"` // per bucket of prometheus.DefBuckets, not cumulative
}

type funcMetrics struct {
	mu      sync.Mutex
	methods map[string]*methodStats
}

var (
	descDuration = prometheus.NewDesc("function_duration_seconds", "Duration of user function in seconds", []string{"method"}, nil)
	descCalls    = prometheus.NewDesc("function_calls_total", "Number of calls to user function", []string{"method"}, nil)
	descFailures = prometheus.NewDesc("function_failures_total", "Number of exceptions in user function", []string{"method"}, nil)
)

func newFuncMetrics() *funcMetrics { return &funcMetrics{methods: map[string]*methodStats{}} }

func (m *funcMetrics) observe(method string, d time.Duration, failed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.methods[method]
	if s == nil {
		s = &methodStats{Buckets: make([]uint64, len(prometheus.DefBuckets))}
		m.methods[method] = s
	}
	s.Calls++
	if failed {
		s.Failures++
	}
	v := d.Seconds()
	s.Count++
	s.Sum += v
	for i, ub := range prometheus.DefBuckets {
		if v <= ub {
			s.Buckets[i]++
			break
		}
	}
}

func (m *funcMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDuration
	ch <- descCalls
	ch <- descFailures
}

func (m *funcMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for method, s := range m.methods {
		buckets := make(map[float64]uint64, len(prometheus.DefBuckets))
		var cum uint64
		for i, ub := range prometheus.DefBuckets {
			cum += s.Buckets[i]
			buckets[ub] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descDuration, s.Count, s.Sum, buckets, method)
		ch <- prometheus.MustNewConstMetric(descCalls, prometheus.CounterValue, s.Calls, method)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, s.Failures, method)
	}
}

func (m *funcMetrics) snapshot() map[string]*methodStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*methodStats, len(m.methods))
	for k, v := range m.methods {
		c := *v
		c.Buckets = append([]uint64(nil), v.Buckets...)
		out[k] = &c
	}
	return out
}

func (m *funcMetrics) restore(state string) {
	var saved map[string]*methodStats
	if state == "" || json.Unmarshal([]byte(state), &saved) != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range saved {
		if len(v.Buckets) == len(prometheus.DefBuckets) {
			m.methods[k] = v
		}
	}
}
