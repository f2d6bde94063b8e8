"""`kubeless-local push --wait` to a real Kubernetes node (tests/support/k8s_node.py, as root): the time
from the command to the function's answer from its pod.

    python bench/bench_push_node.py [--functions 10]

Prints: the node's start (namespace, containerd, API server, kubelet) → node Ready; the copy of the
Python runtime image into the node (`docker save | ctr import`); then `push --wait` of one function
cold (the first pod of that image on the node), warm (a second new function), a re-push of changed
code (a rolling update: the new pod's answer), and N functions in one push → all answering.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

import k8s_node  # noqa: E402
import kubeless_controller  # noqa: E402
from kubernetes import client  # noqa: E402

from kubeless_local.cluster import kubeconfig  # noqa: E402

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: %(name)s
  annotations: {local.kubeless.io/source: %(name)s.py}
spec: {runtime: python3.11, handler: %(name)s.hello, timeout: "30"}
"""


def write(project: Path, name: str, answer: str) -> None:
    project.mkdir(exist_ok=True)
    (project / ("%s.py" % name)).write_text("def hello(event, context):\n    return %r\n" % answer)
    (project / ("%s.yaml" % name)).write_text(FUNCTION % {"name": name})


def push_wait(project: Path, namespace: str, kubeconfig_path: Path):
    env = {"KUBECONFIG": str(kubeconfig_path), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "kubeless_local", "push", str(project), "-n", namespace, "--wait"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    return time.monotonic() - started, out.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--functions", type=int, default=10)
    args = parser.parse_args()
    reason = k8s_node.missing() or kubeless_controller.missing()
    if reason:
        sys.exit(reason)
    k8s_node.build()
    binary = kubeless_controller.build()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        node = k8s_node.Node(Path(tmp) / "node")
        controller = None
        try:
            started = time.monotonic()
            node.start()
            node.wait_ready()
            rows.append(("node start → Ready", time.monotonic() - started, ""))
            started = time.monotonic()
            node.import_docker_images(["kubeless-local/python:3.11"])
            rows.append(("python image into the node (284 MB)", time.monotonic() - started, ""))
            target = kubeconfig.connect("kind-test", str(node.kubeconfig))
            kubeless_controller.install_kubeless(target, {"provision-image": k8s_node.PROVISION_IMAGE})
            controller = kubeless_controller.start(target, node.state, Path(tmp) / "controller", binary)
            core = client.CoreV1Api(target.api)
            for namespace in ("one", "many"):
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            one = Path(tmp) / "one"
            for label, name, answer in (("cold", "first", "1"), ("warm", "second", "2"), ("re-push", "second", "3")):
                write(one, name, answer)
                seconds, lines = push_wait(one, "one", node.kubeconfig)
                rows.append(("push --wait, %s → answer" % label, seconds, lines[-1]))
            many = Path(tmp) / "many"
            for i in range(args.functions):
                write(many, "fn%d" % i, str(i))
            seconds, lines = push_wait(many, "many", node.kubeconfig)
            answers = sum(1 for line in lines if line.startswith("fn") and ": " in line)
            rows.append(
                ("push --wait of %d functions → all answering" % args.functions, seconds, "%d answers" % answers)
            )
        finally:
            if controller is not None:
                controller.stop()
            node.stop()
    print("| step | seconds | last line |")
    print("|---|---|---|")
    for step, seconds, line in rows:
        print("| %s | %.1f | %s |" % (step, seconds, line))


if __name__ == "__main__":
    main()
