"""`kubeless-local push` of N functions to a real local kube-apiserver + etcd (scripts/k8s-up.sh).

    python bench/bench_push.py [--functions 10] [--runs 3]

Prints, per run, the time from the command to all applied (a fresh namespace each run, so every
object is created), then the time of a re-push of the same project and whether it applied nothing
(every object `unchanged`, generation and resourceVersion the same).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402

from kubeless_local.cluster import apply, kubeconfig  # noqa: E402

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: fn-%(i)d
  annotations: {local.kubeless.io/source: fn%(i)d}
spec: {runtime: python3.11, handler: handler.hello, timeout: "30"}
"""


def push(project, namespace, kubeconfig_path):
    env = {"KUBECONFIG": str(kubeconfig_path), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "kubeless_local", "push", str(project), "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return time.monotonic() - started, out.splitlines()


def versions(target, namespace):
    listing = client.CustomObjectsApi(target.api).list_namespaced_custom_object(
        apply.GROUP, apply.VERSION, namespace, "functions"
    )
    return {
        i["metadata"]["name"]: (i["metadata"]["generation"], i["metadata"]["resourceVersion"]) for i in listing["items"]
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--functions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state, project = Path(tmp) / "k8s", Path(tmp) / "project"
        project.mkdir()
        for i in range(args.functions):  # folders: each is zipped, the costliest content type
            (project / ("fn%d" % i)).mkdir()
            (project / ("fn%d" % i) / "handler.py").write_text("def hello(event, context):\n    return %d\n" % i)
            (project / ("fn%d" % i) / "requirements.txt").write_text("requests\n")
            (project / ("fn%d.yaml" % i)).write_text(FUNCTION % {"i": i})
        up = subprocess.run(["sh", str(ROOT / "scripts" / "k8s-up.sh"), str(state)], capture_output=True, text=True)
        if up.returncode:
            sys.exit(up.stderr)
        try:
            kubeconfig_path = Path(up.stdout.strip().splitlines()[-1])
            target = kubeconfig.connect("kind-test", str(kubeconfig_path))
            apply.install_crds(target)
            print("| run | functions | push (all created) s | re-push s | re-push applied nothing |")
            print("|---|---|---|---|---|")
            for run in range(args.runs):
                namespace = "bench-%d" % run
                client.CoreV1Api(target.api).create_namespace({"metadata": {"name": namespace}})
                first, lines = push(project, namespace, kubeconfig_path)
                assert all(line.endswith(" created") for line in lines) and len(lines) == args.functions, lines
                before = versions(target, namespace)
                second, lines = push(project, namespace, kubeconfig_path)
                nothing = all(line.endswith(" unchanged") for line in lines) and versions(target, namespace) == before
                print(
                    "| %d | %d | %.2f | %.2f | %s |"
                    % (run + 1, args.functions, first, second, "yes" if nothing else "NO")
                )
        finally:
            subprocess.run(["sh", str(ROOT / "scripts" / "k8s-down.sh"), str(state)], check=False)


if __name__ == "__main__":
    main()
