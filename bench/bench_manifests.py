"""Loading a project's manifests when the folder also holds hostile or huge YAML (issue J, J7): seconds and
peak memory of what `dev` does before starting functions (load every manifest, fingerprint each function;
`start s`: with the interpreter's start and imports, the ratio's base),
for a folder with one function alone (the baseline, same run) and with an alias bomb ("billion laughs",
~1.2 KB) or a 20 MB data YAML that names kubeless.io in a comment beside it. Each case runs in a fresh
interpreter, so its peak RSS is its own.

    python bench/bench_manifests.py [--levels 8] [--data-mb 20] [--code PATH]

`--code`: the kubeless_local checkout to measure (default: this one), e.g. an older commit's tree
(`git archive <commit> kubeless_local | tar -x -C /tmp/old`) for before/after numbers.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: hello}
spec: {runtime: python3.11, handler: handler.hello, function: "def hello(event, context):\\n    return 1\\n"}
"""

MEASURE = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from kubeless_local import spec as specs
from kubeless_local.emulator import project as projects
from kubeless_local.errors import UserError
root = Path(sys.argv[2])
started = time.perf_counter()
loader = specs.Loader(root)
try:
    manifests = loader.collect() if hasattr(loader, "collect") else loader.load()
    prints = [projects.fingerprint(fn, projects.Digests(), specs.Ignore(), root) for fn in manifests.functions]
    outcome = "%d function(s), %d error(s)" % (len(manifests.functions), len(getattr(manifests, "errors", [])))
except UserError as exc:
    outcome = "refused: " + str(exc)[:90]
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "outcome": outcome}))
"""


def alias_bomb(levels):
    lines = ["apiVersion: kubeless.io/v1beta1", "kind: Function", "metadata:", "  name: bomb", "  labels:"]
    lines.append('    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
    for level in range(1, levels):
        lines.append("    l%d: &l%d [%s]" % (level, level, ", ".join(["*l%d" % (level - 1)] * 9)))
    lines.append('spec: {runtime: python3.11, handler: handler.hello, function: "x"}')
    return "\n".join(lines) + "\n"


def data_yaml(megabytes):
    row = "  - {id: 1, name: widget, price: 2.5, tags: [a, b, c]}\n"
    return "# rows exported for the kubeless.io demo\nrows:\n" + row * (megabytes * (1 << 20) // len(row))


def measure(code, folder):
    """The loading step's own seconds, and the whole start (a fresh interpreter: imports, load, fingerprints)."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, str(code), str(folder)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        return {
            "seconds": float("nan"),
            "wall": wall,
            "rss_mb": float("nan"),
            "outcome": "failed: " + out.stderr[-200:],
        }
    return {**json.loads(out.stdout), "wall": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=8, help="alias bomb depth (9 entries per level)")
    parser.add_argument("--data-mb", type=int, default=20)
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose kubeless_local is measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"function alone (baseline)": {}, "+ alias bomb": {"bomb.yaml": alias_bomb(args.levels)}}
        cases["+ %d MB data YAML (kubeless.io in a comment)" % args.data_mb] = {"data.yaml": data_yaml(args.data_mb)}
        results = {}
        for index, (name, files) in enumerate(cases.items()):
            folder = Path(tmp) / str(index)
            folder.mkdir()
            (folder / "function.yaml").write_text(FUNCTION)
            for file, text in files.items():
                (folder / file).write_text(text)
            sizes = ", ".join("%s %.1f KB" % (f, len(t) / 1024) for f, t in files.items())
            results[name] = measure(args.code, folder), sizes
        base = results["function alone (baseline)"][0]
        print("code: %s" % args.code)
        print("%-46s %8s %8s %8s %8s  %s" % ("case", "load s", "start s", "ratio", "peak MB", "outcome"))
        for name, (result, sizes) in results.items():
            print(
                "%-46s %8.3f %8.2f %7.1fx %8.0f  %s%s"
                % (
                    name,
                    result["seconds"],
                    result["wall"],
                    result["wall"] / base["wall"],
                    result["rss_mb"],
                    result["outcome"],
                    " (%s)" % sizes if sizes else "",
                )
            )


if __name__ == "__main__":
    main()
