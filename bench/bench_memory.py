"""Memory after big request bodies: the resident memory of a function's server and its workers when
idle, before and a few seconds after N bodies of M MB (the `large` scenario), as a ratio.

    python bench/bench_memory.py [--runtimes python3.11,...] [--backend process|docker] [--bodies 4] [--mb 50]

A server that keeps what its biggest requests left behind stays far above 1×.
"""

import sys
import time
import urllib.request

from common import ROOT, Engine, bench_parser

sys.path.insert(0, str(ROOT / "tests" / "support"))
from processes import tree_rss_mb

SETTLE_SECONDS = 5  # the releases run within a second of the call; a little more for slow machines


def post(url, body):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read().decode()


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--bodies", type=int, default=4)
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    print(
        "| runtime | backend | idle MB | peak MB | %d s after %d × %d MB | ratio to idle |"
        % (SETTLE_SECONDS, args.bodies, args.mb)
    )
    print("|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        engine = Engine(args.backend)
        try:
            _, instance = engine.function(name, "large", env=[("REQ_MB_LIMIT", str(args.mb + 10))])
            url = instance.url + "/"
            for _ in range(5):
                post(url, b"x" * 1000)
            idle = tree_rss_mb(instance.pid)
            body, peak = b"x" * (args.mb << 20), idle
            for _ in range(args.bodies):
                assert post(url, body) == str(len(body))
                peak = max(peak, tree_rss_mb(instance.pid))
            time.sleep(SETTLE_SECONDS)  # a benchmark's fixed interval, not a synchronisation
            after = tree_rss_mb(instance.pid)
            print("| %s | %s | %d | %d | %d | %.2f× |" % (name, args.backend, idle, peak, after, after / idle))
        finally:
            engine.close()


if __name__ == "__main__":
    main()
