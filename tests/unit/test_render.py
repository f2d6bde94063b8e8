"""The push renderer: local code → inline Function (contract §1), the inverse of layout.layout_code."""

import base64
import io
import os
import types
import zipfile
from pathlib import Path

import pytest
import yaml

from kubeless_local import spec as specs
from kubeless_local.cluster import render
from kubeless_local.emulator import layout
from kubeless_local.errors import UserError

PY = types.SimpleNamespace(suffix=".py", dep_name="requirements.txt")  # what layout_code reads of a runtime

MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: %(name)s
  labels: {team: a}
  annotations:
    local.kubeless.io/source: %(source)s
    %(deps)s
    owner: me
spec:
  runtime: python3.11
  handler: handler.hello
  timeout: "30"
  deployment:
    spec:
      template:
        spec:
          containers:
          - env: [{name: GREETING, value: hi}]
            resources: {limits: {memory: 128Mi}}
  service:
    ports: [{name: http-function-port, port: 8080, protocol: TCP, targetPort: 8080}]
"""


def project(tmp_path, name, source, deps_file=None):
    deps = "local.kubeless.io/deps: %s" % deps_file if deps_file else ""
    (tmp_path / ("%s.yaml" % name)).write_text(MANIFEST % {"name": name, "source": source, "deps": deps})
    return specs.load(tmp_path).function(name)


def tree(folder: Path):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def round_trip(tmp_path, fn):
    """(files laid out from the local code, files laid out from the rendered Function)."""
    rendered = render.render_function(fn, "default", "demo", catalog=None)
    local, pushed = tmp_path / "local", tmp_path / "pushed"
    local.mkdir()
    pushed.mkdir()
    local_deps = layout.layout_code(fn, PY, local)
    again = specs.parse_function(yaml.safe_load(render.to_yaml([rendered])), tmp_path / "rendered.yaml")
    pushed_deps = layout.layout_code(again, PY, pushed)
    return rendered, (tree(local), local_deps), (tree(pushed), pushed_deps)


def test_text_file_round_trip(tmp_path):
    code = "def hello(event, context):\n    return 'héllo'\n\tx = 1   \r\n\n"  # tabs, CRLF, trailing spaces
    (tmp_path / "handler.py").write_bytes(code.encode())
    (tmp_path / "requirements.txt").write_text("requests==2.31.0\n")
    fn = project(tmp_path, "hello", "handler.py", "requirements.txt")
    rendered, local, pushed = round_trip(tmp_path, fn)
    assert rendered["spec"]["function-content-type"] == "text"
    assert rendered["spec"]["deps"] == "requests==2.31.0\n"
    assert local == pushed and local[0]["handler.py"] == code.encode()
    assert local[0]["requirements.txt"] == b"requests==2.31.0\n"


def test_binary_file_is_base64_and_round_trips(tmp_path):
    data = bytes(range(256)) * 4
    (tmp_path / "handler.py").write_bytes(data)
    rendered, local, pushed = round_trip(tmp_path, project(tmp_path, "bin", "handler.py"))
    assert rendered["spec"]["function-content-type"] == "base64"
    assert base64.b64decode(rendered["spec"]["function"]) == data
    assert rendered["spec"]["checksum"] == specs.checksum_of(data)
    assert local == pushed and pushed[0]["handler.py"] == data


def test_folder_is_base64_zip_and_round_trips(tmp_path):
    src = tmp_path / "src"
    (src / "lib" / "sub").mkdir(parents=True)
    (src / "handler.py").write_text("from lib import x\n")
    (src / "lib" / "__init__.py").write_text("x = 1\n")
    (src / "lib" / "sub" / "data.bin").write_bytes(b"\x00\xff\x10")
    (src / "lib" / ".keep").write_text("hidden below the top is copied\n")
    (src / ".env").write_text("SECRET=1\n")  # hidden at the top: never copied, never pushed
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"junk")
    (src / "requirements.txt").write_text("six\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    fn = project(tmp_path, "folder", "src")
    rendered, local, pushed = round_trip(tmp_path, fn)
    assert rendered["spec"]["function-content-type"] == "base64+zip"
    assert rendered["spec"]["deps"] == "six\n"
    assert local == pushed
    assert set(pushed[0]) == {
        "handler.py",
        "lib/__init__.py",
        "lib/sub/data.bin",
        "lib/.keep",
        "requirements.txt",
        "run.sh",
    }
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(rendered["spec"]["function"]))) as archive:
        assert archive.getinfo("run.sh").external_attr >> 16 & 0o777 == 0o755  # `unzip` keeps the mode
    # Deterministic: rendering again gives the same artifact, so a re-push changes nothing.
    assert render.render_function(fn, "default", "demo")["spec"]["checksum"] == rendered["spec"]["checksum"]


def test_folder_with_deps_file_annotation_takes_that_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "handler.py").write_text("pass\n")
    (src / "requirements.txt").write_text("old\n")
    (tmp_path / "reqs.txt").write_text("new\n")
    rendered, local, pushed = round_trip(tmp_path, project(tmp_path, "withdeps", "src", "reqs.txt"))
    assert rendered["spec"]["deps"] == "new\n"
    assert local == pushed and pushed[0]["requirements.txt"] == b"new\n"


GOLDEN = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  labels:
    team: a
    app.kubernetes.io/managed-by: kubeless-local
    kubeless-local.io/project: demo
  annotations:
    owner: me
  namespace: prod
spec:
  runtime: python3.11
  handler: handler.hello
  timeout: '30'
  deployment:
    spec:
      template:
        spec:
          containers:
          - env:
            - name: GREETING
              value: hi
            resources:
              limits:
                memory: 128Mi
  service:
    ports:
    - name: http-function-port
      port: 8080
      protocol: TCP
      targetPort: 8080
  function: |
    def hello(event, context):
        return "hi"
  function-content-type: text
  checksum: sha256:%s
  deps: |
    requests
---
apiVersion: kubeless.io/v1beta1
kind: HTTPTrigger
metadata:
  name: hello
  namespace: prod
  labels:
    app.kubernetes.io/managed-by: kubeless-local
    kubeless-local.io/project: demo
spec:
  function-name: hello
  path: greet
---
apiVersion: kubeless.io/v1beta1
kind: NATSTrigger
metadata:
  name: on-news
  namespace: prod
  labels:
    app.kubernetes.io/managed-by: kubeless-local
    kubeless-local.io/project: demo
spec:
  topic: news
  functionSelector:
    matchLabels:
      team: a
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: hello
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /
  namespace: prod
  labels:
    app.kubernetes.io/managed-by: kubeless-local
    kubeless-local.io/project: demo
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - path: /greet
        pathType: ImplementationSpecific
        backend:
          service:
            name: hello
            port:
              number: 8080
"""


def test_golden_yaml(tmp_path):
    code = 'def hello(event, context):\n    return "hi"\n'
    (tmp_path / "handler.py").write_text(code)
    (tmp_path / "requirements.txt").write_text("requests\n")
    project(tmp_path, "hello", "handler.py", "requirements.txt")
    (tmp_path / "triggers.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: HTTPTrigger\nmetadata: {name: hello}\n"
        "spec: {function-name: hello, path: greet}\n---\n"
        "apiVersion: kubeless.io/v1beta1\nkind: NATSTrigger\nmetadata: {name: on-news}\n"
        "spec: {topic: news, functionSelector: {matchLabels: {team: a}}}\n"
    )
    out = render.to_yaml(render.render_project(tmp_path, "prod", "demo"))
    assert out == GOLDEN % specs.sha256_hex(code.encode())


def test_inline_function_goes_as_written(tmp_path):
    (tmp_path / "f.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: inline}\n"
        "spec: {runtime: python3.11, handler: h.f, function: 'x = 1', deps: ''}\n"
    )
    (obj,) = render.render_project(tmp_path, "default", "p")
    assert obj["spec"] == {"runtime": "python3.11", "handler": "h.f", "function": "x = 1", "deps": ""}


def test_code_above_the_configmap_limit_is_refused(tmp_path):
    (tmp_path / "handler.py").write_bytes(os.urandom(800 * 1024))  # base64: ~1.07 MiB
    fn = project(tmp_path, "big", "handler.py")
    with pytest.raises(UserError, match=r"big\.yaml: Function big: the code is 1\.0 MiB once encoded; .*1 MiB limit"):
        render.render_function(fn, "default", "p")


def test_project_label_is_a_valid_label_value(tmp_path):
    folder = tmp_path / "My Project!"
    folder.mkdir()
    assert render.project_label(folder) == "My-Project"


def test_no_function_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no Kubeless Function found to push"):
        render.render_project(tmp_path, "default")


def test_a_file_of_a_runtime_kubeless_does_not_know_keeps_its_name_without_extension(tmp_path):
    """The Kubeless docs' custom runtime: /kubeless/<file name without extension>, whatever the handler's
    module; a known runtime's file is MOD_NAME + its suffix."""
    (tmp_path / "fn.txt").write_text("code")
    fn = project(tmp_path, "custom", "fn.txt")  # handler: handler.hello
    unknown, known = tmp_path / "unknown", tmp_path / "known"
    unknown.mkdir()
    known.mkdir()
    layout.layout_code(fn, types.SimpleNamespace(suffix="", dep_name=""), unknown)
    layout.layout_code(fn, PY, known)
    assert tree(unknown) == {"fn": b"code"} and tree(known) == {"handler.py": b"code"}
