<?php
/*
 * Kubeless PHP runtime: the Kubeless metric families (function_calls_total, function_failures_total,
 * function_duration_seconds with label `method`), kept in the server process.
 */

final class KlMetrics
{
    // prometheus_client's default buckets, printed as it prints them
    private const BUCKETS = ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1.0', '2.5', '5.0', '10.0'];

    private array $methods = []; // label => ['calls', 'failures', 'sum', 'buckets' => [cumulative counts]]

    public function observe(string $label, float $seconds, bool $failed): void
    {
        if (!isset($this->methods[$label])) {
            $this->methods[$label] = ['calls' => 0, 'failures' => 0, 'sum' => 0.0, 'buckets' => array_fill(0, count(self::BUCKETS), 0)];
        }
        $m = &$this->methods[$label];
        $m['calls']++;
        $m['failures'] += $failed ? 1 : 0;
        $m['sum'] += $seconds;
        foreach (self::BUCKETS as $i => $le) {
            if ($seconds <= (float) $le) {
                $m['buckets'][$i]++;
            }
        }
    }

    /** Prometheus text exposition, as prometheus_client prints it. */
    public function text(): string
    {
        $fmt = fn (float $v) => rtrim(rtrim(sprintf('%.9F', $v), '0'), '.') ?: '0';
        $lines = ['# HELP function_duration_seconds Duration of user function in seconds',
            '# TYPE function_duration_seconds histogram'];
        foreach ($this->methods as $label => $m) {
            $l = addcslashes($label, "\\\"\n");
            foreach (self::BUCKETS as $i => $le) {
                $lines[] = sprintf('function_duration_seconds_bucket{method="%s",le="%s"} %d', $l, $le, $m['buckets'][$i]);
            }
            $lines[] = sprintf('function_duration_seconds_bucket{method="%s",le="+Inf"} %d', $l, $m['calls']);
            $lines[] = sprintf('function_duration_seconds_count{method="%s"} %d', $l, $m['calls']);
            $lines[] = sprintf('function_duration_seconds_sum{method="%s"} %s', $l, $fmt($m['sum']));
        }
        $lines[] = '# HELP function_calls_total Number of calls to user function';
        $lines[] = '# TYPE function_calls_total counter';
        foreach ($this->methods as $label => $m) {
            $lines[] = sprintf('function_calls_total{method="%s"} %d', addcslashes($label, "\\\"\n"), $m['calls']);
        }
        $lines[] = '# HELP function_failures_total Number of exceptions in user function';
        $lines[] = '# TYPE function_failures_total counter';
        foreach ($this->methods as $label => $m) {
            $lines[] = sprintf('function_failures_total{method="%s"} %d', addcslashes($label, "\\\"\n"), $m['failures']);
        }
        return implode("\n", $lines) . "\n";
    }
}
