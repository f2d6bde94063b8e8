package io.kubeless.runtime;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.DoubleAdder;

/**
 * The three Kubeless metric families, unlabelled as in the upstream Java runtime, written in the
 * Prometheus text format by hand (no client library).
 */
final class Metrics {
    // The Prometheus client's default buckets, as the other runtimes use.
    private static final double[] BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

    private final AtomicLong calls = new AtomicLong();
    private final AtomicLong failures = new AtomicLong();
    private final AtomicLongArray buckets = new AtomicLongArray(BUCKETS.length);
    private final DoubleAdder durationSum = new DoubleAdder();

    void observe(double seconds, boolean failed) {
        for (int i = 0; i < BUCKETS.length; i++) {
            if (seconds <= BUCKETS[i]) {
                buckets.incrementAndGet(i);
            }
        }
        durationSum.add(seconds);
        if (failed) {
            failures.incrementAndGet();
        }
        calls.incrementAndGet();  // last: a scrape never shows more calls than observed durations
    }

    String render() {
        long count = calls.get();
        StringBuilder out = new StringBuilder(1024);
        out.append("# HELP function_duration_seconds Duration of user function in seconds\n");
        out.append("# TYPE function_duration_seconds histogram\n");
        for (int i = 0; i < BUCKETS.length; i++) {
            out.append("function_duration_seconds_bucket{le=\"").append(BUCKETS[i]).append("\"} ")
                .append(Math.min(buckets.get(i), count)).append('\n');
        }
        out.append("function_duration_seconds_bucket{le=\"+Inf\"} ").append(count).append('\n');
        out.append("function_duration_seconds_sum ").append(durationSum.sum()).append('\n');
        out.append("function_duration_seconds_count ").append(count).append('\n');
        out.append("# HELP function_calls_total Number of calls to user function\n");
        out.append("# TYPE function_calls_total counter\n");
        out.append("function_calls_total ").append(count).append('\n');
        out.append("# HELP function_failures_total Number of exceptions in user function\n");
        out.append("# TYPE function_failures_total counter\n");
        out.append("function_failures_total ").append(failures.get()).append('\n');
        return out.toString();
    }
}
