import textwrap

import pytest

from kubeless_local import spec as specs
from kubeless_local.errors import UserError

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  labels: {app: shop}
  annotations:
    local.kubeless.io/source: handler.py
    local.kubeless.io/deps: requirements.txt
spec:
  runtime: python3.11
  handler: handler.hello
  timeout: "10"
  deployment:
    spec:
      template:
        spec:
          containers:
          - env:
            - {name: K, value: V}
            resources:
              limits: {memory: 128Mi}
"""


def write(tmp_path, text, name="function.yaml"):
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path / name


def error_of(tmp_path, text):
    write(tmp_path, text)
    with pytest.raises(UserError) as info:
        specs.load(tmp_path)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def test_loads_a_function_and_its_fields(tmp_path):
    write(tmp_path, FUNCTION)
    fn = specs.load(tmp_path).functions[0]
    assert (fn.name, fn.runtime, fn.module, fn.function_name, fn.timeout) == ("hello", "python3.11", "handler", "hello", "10")
    assert fn.source == (tmp_path / "handler.py").resolve()
    assert fn.env == [("K", "V")]
    assert fn.memory_limit == "128Mi"
    assert fn.port == 8080
    assert fn.labels == {"app": "shop"}


def test_loads_triggers_from_a_multi_document_file(tmp_path):
    write(tmp_path, FUNCTION + """---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: nightly}
spec: {function-name: hello, schedule: "0 3 * * *", payload: {x: 1}}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec: {topic: orders, functionSelector: {matchLabels: {app: shop}}}
---
apiVersion: kubeless.io/v1beta1
kind: HTTPTrigger
metadata: {name: web}
spec: {function-name: hello, path: shop}
""")
    m = specs.load(tmp_path)
    assert m.cron_triggers[0].payload == {"x": 1}
    assert m.kafka_triggers[0].selector == {"app": "shop"}
    assert m.http_triggers[0].path == "shop"


def test_other_tools_yaml_is_ignored(tmp_path):
    write(tmp_path, FUNCTION)
    (tmp_path / "deploy.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    assert [f.name for f in specs.load(tmp_path).functions] == ["hello"]


def test_malformed_yaml_names_file_and_line(tmp_path):
    message = error_of(tmp_path, "kind: Function\nmetadata: [unclosed\n")
    assert "function.yaml:" in message and "malformed YAML" in message


def test_unknown_kind(tmp_path):
    message = error_of(tmp_path, "apiVersion: kubeless.io/v1beta1\nkind: Lambda\nmetadata: {name: x}\n")
    assert "unknown kind 'Lambda'" in message


def test_handler_without_a_dot(tmp_path):
    message = error_of(tmp_path, FUNCTION.replace("handler: handler.hello", "handler: hello"))
    assert "Function hello" in message and "spec.handler 'hello'" in message and "<module>.<function>" in message


def test_missing_source_file(tmp_path):
    message = error_of(tmp_path, FUNCTION.replace("source: handler.py", "source: nope.py"))
    assert "local.kubeless.io/source" in message and "nope.py does not exist" in message


def test_bad_checksum_and_timeout(tmp_path):
    assert "spec.checksum" in error_of(tmp_path, FUNCTION.replace('timeout: "10"', 'timeout: "10"\n  checksum: md5:abc'))
    assert "spec.timeout" in error_of(tmp_path, FUNCTION.replace('timeout: "10"', 'timeout: "soon"'))


def test_kubeless_kind_with_wrong_api_version(tmp_path):
    message = error_of(tmp_path, FUNCTION.replace("kubeless.io/v1beta1", "v1"))
    assert "apiVersion: kubeless.io/v1beta1" in message


def test_duplicate_function_names(tmp_path):
    write(tmp_path, FUNCTION)
    write(tmp_path, FUNCTION, name="again.yaml")
    with pytest.raises(UserError, match="names must be unique"):
        specs.load(tmp_path)


def test_inline_function_needs_no_source(tmp_path):
    write(tmp_path, """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: inline}
spec: {runtime: python3.11, handler: hello.foo, function: "def foo(e, c):\\n    return 1\\n"}
""")
    fn = specs.load(tmp_path).functions[0]
    assert fn.source is None and fn.function.startswith("def foo")


def test_checksum_vector_21():
    assert specs.checksum_of(b"function") == "sha256:78f9ac018e554365069108352dacabb7fbd15246edf19400677e3b54fe24e126"
    assert specs.checksum_of(b'def foo(event, context):\n    return "hello world"\n') == \
        "sha256:d251999dcbfdeccec385606fd0aec385b214cfc74ede8b6c9e47af71728f6e9a"
