"""Timeout enforcement: how long after FUNC_TIMEOUT a runaway call is answered with 408.

Both a blocking sleep and a CPU loop, and how fast the same server answers a quick call meanwhile.

    python bench/bench_timeout.py [--runtimes python3.11,...] [--calls 5] [--timeout 1]

Prints the overshoot (answer time − timeout) in ms; the issue's bound is timeout + 100 ms.
"""

import concurrent.futures
import statistics
import time
import urllib.error
import urllib.request

from common import CATALOG, Engine, bench_parser


def post(url, body, timeout=60):
    """(status, ms) of a POST (a GET when body is None)."""
    started = time.monotonic()
    try:
        data = body.encode() if body is not None else None
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, (time.monotonic() - started) * 1000


def main():
    parser = bench_parser(__doc__, backend=False)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    print("| runtime | scenario | calls | 408s | overshoot median ms | overshoot max ms | quick call during it ms |")
    print("|---|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime, _ = CATALOG.resolve(name)
        # The quick call goes to the same server: another call of `sleep`; /healthz beside a `spin`.
        for scenario, body, quick_path, quick_body in (("sleep", "30", "/", "0"), ("spin", "x", "/healthz", None)):
            engine = Engine()
            try:
                _, slow = engine.function(runtime.name, scenario, timeout=str(args.timeout))
                results, quick_ms = [], []
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    for _ in range(args.calls):
                        future = pool.submit(post, slow.url + "/", body)
                        time.sleep(0.2)
                        quick_ms.append(post(slow.url + quick_path, quick_body)[1])
                        results.append(future.result())
                        time.sleep(0.3)  # a replacement worker starts
                over = [ms - args.timeout * 1000 for status, ms in results]
                print(
                    "| %s | %s | %d | %d | %.0f | %.0f | %.1f |"
                    % (
                        runtime.name,
                        scenario,
                        args.calls,
                        sum(status == 408 for status, _ in results),
                        statistics.median(over),
                        max(over),
                        statistics.median(quick_ms),
                    ),
                    flush=True,
                )
            finally:
                engine.close()


if __name__ == "__main__":
    main()
