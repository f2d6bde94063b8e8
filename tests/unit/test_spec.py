import codecs
import os
import socket
import textwrap
import threading
from pathlib import Path

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
    assert (fn.name, fn.runtime, fn.module, fn.function_name, fn.timeout) == (
        "hello",
        "python3.11",
        "handler",
        "hello",
        "10",
    )
    assert fn.source == (tmp_path / "handler.py").resolve()
    assert fn.env == [("K", "V")]
    assert fn.memory_limit == "128Mi"
    assert fn.port == 8080
    assert fn.labels == {"app": "shop"}


def test_loads_triggers_from_a_multi_document_file(tmp_path):
    write(
        tmp_path,
        FUNCTION
        + """---
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
""",
    )
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
    assert "spec.checksum" in error_of(
        tmp_path, FUNCTION.replace('timeout: "10"', 'timeout: "10"\n  checksum: md5:abc')
    )
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
    write(
        tmp_path,
        """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: inline}
spec: {runtime: python3.11, handler: hello.foo, function: "def foo(e, c):\\n    return 1\\n"}
""",
    )
    fn = specs.load(tmp_path).functions[0]
    assert fn.source is None and fn.function.startswith("def foo")


@pytest.mark.parametrize("written", ["handler.py", "./handler.py", "src/handler.py"])
def test_a_file_name_as_the_inline_code_is_refused_with_the_annotation_to_use(tmp_path, written):
    """`function: handler.py` was taken as the code itself (as Kubeless takes it): the function then failed to
    load with `NameError: name 'handler' is not defined`."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "handler.py").write_text("def hello(event, context):\n    return 'hi'\n")
    write(
        tmp_path,
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: hello}\n"
        "spec: {runtime: python3.11, handler: handler.hello, function: %s}\n" % written,
    )
    with pytest.raises(UserError) as raised:
        specs.load(tmp_path)
    assert str(raised.value) == (
        "%s: Function hello: spec.function holds the code itself, not a file's name (%s): to run that file, "
        "set annotation local.kubeless.io/source: %s and leave spec.function out"
        % (tmp_path / "function.yaml", written, written)
    )


def test_one_line_of_code_that_names_no_file_is_code(tmp_path):
    write(
        tmp_path,
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: hello}\n"
        "spec: {runtime: nodejs20, handler: handler.hello, function: 'module.exports = {hello: () => 1}'}\n",
    )
    assert specs.load(tmp_path).functions[0].function == "module.exports = {hello: () => 1}"


def test_checksum_vector_21():
    assert specs.checksum_of(b"function") == "sha256:78f9ac018e554365069108352dacabb7fbd15246edf19400677e3b54fe24e126"
    assert (
        specs.checksum_of(b'def foo(event, context):\n    return "hello world"\n')
        == "sha256:d251999dcbfdeccec385606fd0aec385b214cfc74ede8b6c9e47af71728f6e9a"
    )


# ---------------------------------------------------------------- files that are not manifests never stop `dev`

HELM_TEMPLATE = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: {{ .Values.name }}
spec:
  runtime: {{ .Values.runtime }}
  handler: handler.hello
"""


def test_a_helm_chart_in_the_folder_is_a_notice_not_an_error(tmp_path):
    write(tmp_path, FUNCTION)
    chart = tmp_path / "chart" / "templates"
    chart.mkdir(parents=True)
    (chart / "function.yaml").write_text(HELM_TEMPLATE)
    (chart / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{ .Values.name }}}\n"
    )
    (chart / "quoted.yaml").write_text(
        HELM_TEMPLATE.replace("{{ .Values.name }}", '"{{ .Values.name }}"').replace(
            "{{ .Values.runtime }}", '"{{ .Values.runtime }}"'
        )
    )
    manifests = specs.load(tmp_path)
    assert [f.name for f in manifests.functions] == ["hello"]
    assert len(manifests.notices) == 2
    assert all("template" in n and "\n" not in n for n in manifests.notices)
    assert str(chart / "function.yaml") in manifests.notices[0]


def test_the_init_templates_of_this_repo_do_not_stop_dev():
    from kubeless_local.paths import TEMPLATES_DIR

    manifests = specs.load(TEMPLATES_DIR)
    templates = [folder for folder in TEMPLATES_DIR.iterdir() if (folder / "function.yaml").exists()]
    assert manifests.functions == [] and len(manifests.notices) == len(templates) == 6


def test_a_huge_data_yaml_is_not_parsed(tmp_path, monkeypatch):
    write(tmp_path, FUNCTION)
    (tmp_path / "data.yaml").write_text("rows:\n" + "  - {id: 1, name: x, price: 2.5}\n" * 200_000)
    parsed = []
    real = specs.load_documents
    monkeypatch.setattr(specs, "load_documents", lambda path, text=None: parsed.append(path.name) or real(path, text))
    assert [f.name for f in specs.load(tmp_path).functions] == ["hello"]
    assert parsed == ["function.yaml"]


def test_a_malformed_non_kubeless_yaml_is_skipped(tmp_path):
    write(tmp_path, FUNCTION)
    (tmp_path / "ci.yaml").write_text("steps: [unclosed\n")
    assert [f.name for f in specs.load(tmp_path).functions] == ["hello"]


def test_a_reload_reparses_only_the_changed_file(tmp_path, monkeypatch):
    write(tmp_path, FUNCTION)
    other = tmp_path / "sub" / "other.yaml"
    other.parent.mkdir()
    other.write_text(
        FUNCTION.replace("name: hello", "name: other")
        .replace("handler.py", "../handler.py")
        .replace("requirements.txt", "../requirements.txt")
    )
    loader = specs.Loader(tmp_path)
    parsed = []
    real = specs.load_documents
    monkeypatch.setattr(specs, "load_documents", lambda path, text=None: parsed.append(path.name) or real(path, text))
    assert sorted(f.name for f in loader.load().functions) == ["hello", "other"]
    assert sorted(parsed) == ["function.yaml", "other.yaml"]
    parsed.clear()
    other.write_text(other.read_text().replace('timeout: "10"', 'timeout: "20"'))
    manifests = loader.load()
    assert parsed == ["other.yaml"]
    assert manifests.function("other").timeout == "20" and manifests.function("hello").timeout == "10"
    # The objects are rebuilt every time: a source deleted since is still reported.
    (tmp_path / "handler.py").unlink()
    with pytest.raises(UserError, match="handler.py does not exist"):
        loader.load()


def test_ignored_folders_are_not_walked(tmp_path, monkeypatch):
    write(tmp_path, FUNCTION)
    for folder in ("node_modules/pkg", ".venv/lib", "build/out", "docs/gen"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "x.yaml").write_text(FUNCTION.replace("name: hello", "name: dup"))
    entered = []
    real_walk = specs.os.walk

    def spy(top, *args, **kwargs):
        for folder, dirs, files in real_walk(top, *args, **kwargs):
            entered.append(Path(folder).relative_to(tmp_path).as_posix())
            yield folder, dirs, files

    monkeypatch.setattr(specs.os, "walk", spy)
    assert [f.name for f in specs.load(tmp_path, ignore=["build/", "gen"]).functions] == ["hello"]
    assert sorted(entered) == [".", "docs"]


def test_user_ignore_patterns_are_gitignore_style():
    ignore = specs.Ignore(["build/", "*.log", "/top.yaml", "docs/*.yaml", "**/cache"])
    assert ignore.folder("build") and ignore.folder("a/build") and not ignore.file("build")
    assert ignore.file("x.log") and ignore.file("a/b/x.log")
    assert ignore.file("top.yaml") and not ignore.file("sub/top.yaml")
    assert ignore.file("docs/a.yaml") and not ignore.file("a.yaml")
    assert ignore.folder("x/cache")
    assert ignore.path("node_modules/a/b.js") and ignore.path("a/.git/HEAD") and ignore.path("x.pyc")
    assert not ignore.path("src/handler.py")


@pytest.mark.parametrize("source", ["/etc/passwd", "../outside.py"])
def test_a_source_outside_the_project_is_refused(tmp_path, source):
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "outside.py").write_text("x = 1\n")
    message = error_of(project, FUNCTION.replace("source: handler.py", "source: %s" % source))
    assert "local.kubeless.io/source" in message and "outside the project folder" in message
    assert str(project / "function.yaml") in message


def test_a_source_linked_from_outside_the_project_says_it_is_a_link(tmp_path):
    """A monorepo's shared handler linked into the function's folder: the file is right there, so the line
    says where it leads, and how to run it."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (project / "handler.py").symlink_to("../shared.py")
    message = error_of(project, FUNCTION)
    assert (
        "source: handler.py links to %s, outside the project folder %s:" % (tmp_path / "shared.py", project) in message
    )
    assert "run in a folder that holds both" in message


def test_deps_outside_the_project_is_refused(tmp_path):
    message = error_of(tmp_path, FUNCTION.replace("deps: requirements.txt", "deps: /etc/hostname"))
    assert "local.kubeless.io/deps" in message and "outside the project folder" in message


def test_a_source_in_a_sibling_folder_of_the_project_is_fine(tmp_path):
    (tmp_path / "fns").mkdir()
    write(
        tmp_path,
        FUNCTION.replace("handler.py", "../handler.py").replace("requirements.txt", "../requirements.txt"),
        name="fns/function.yaml",
    )
    assert specs.load(tmp_path).functions[0].source == (tmp_path / "handler.py").resolve()


def test_kubeless_kinds_not_emulated_are_listed_with_a_notice(tmp_path):
    write(
        tmp_path,
        FUNCTION
        + """---
apiVersion: kubeless.io/v1beta1
kind: KinesisTrigger
metadata: {name: stream}
spec: {function-name: hello, stream: s, aws-region: x, shard: y, secret: z}
""",
    )
    manifests = specs.load(tmp_path)
    assert [f.name for f in manifests.functions] == ["hello"]
    assert len(manifests.notices) == 1
    assert "KinesisTrigger stream is not emulated" in manifests.notices[0]


def test_nats_and_kafka_triggers_take_a_full_label_selector(tmp_path):
    write(
        tmp_path,
        FUNCTION
        + """---
apiVersion: kubeless.io/v1beta1
kind: NATSTrigger
metadata: {name: orders, namespace: shop}
spec:
  topic: orders.v1
  functionSelector:
    matchLabels: {app: shop}
    matchExpressions: [{key: tier, operator: In, values: [back]}, {key: canary, operator: DoesNotExist}]
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec: {topic: orders, functionSelector: {matchExpressions: [{key: app, operator: Exists}]}}
""",
    )
    manifests = specs.load(tmp_path)
    assert manifests.notices == []
    (nats,) = manifests.nats_triggers
    assert isinstance(nats, specs.NATSTrigger) and nats.source == "nats" and nats.namespace == "shop"
    assert nats.topic == "orders.v1" and nats.selector == {"app": "shop"}
    assert nats.expressions == (
        {"key": "tier", "operator": "In", "values": ["back"]},
        {"key": "canary", "operator": "DoesNotExist", "values": []},
    )
    (kafka,) = manifests.kafka_triggers
    assert kafka.source == "kafka" and kafka.selector == {} and kafka.expressions[0]["operator"] == "Exists"


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("{matchExpressions: {key: a}}", "matchExpressions must be a list"),
        ("{matchExpressions: [{operator: Exists}]}", r"matchExpressions\[0\].key is required"),
        (
            "{matchExpressions: [{key: a, operator: Has}]}",
            r"matchExpressions\[0\].operator must be one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            "{matchExpressions: [{key: a, operator: In}]}",
            r"matchExpressions\[0\].values must be a non-empty list for In",
        ),
        (
            "{matchExpressions: [{key: a, operator: Exists, values: [x]}]}",
            r"matchExpressions\[0\].values must be empty for Exists",
        ),
    ],
)
def test_a_bad_selector_is_named(tmp_path, selector, message):
    write(
        tmp_path,
        FUNCTION
        + "---\napiVersion: kubeless.io/v1beta1\nkind: KafkaTrigger\nmetadata: {name: t}\n"
        + "spec: {topic: orders, functionSelector: %s}\n" % selector,
    )
    with pytest.raises(UserError, match="KafkaTrigger t: spec.functionSelector." + message):
        specs.load(tmp_path)


def test_a_topic_name_kafka_refuses_is_named(tmp_path):
    write(
        tmp_path,
        FUNCTION + "---\napiVersion: kubeless.io/v1beta1\nkind: NATSTrigger\nmetadata: {name: t}\nspec: {topic: a b}\n",
    )
    with pytest.raises(UserError, match="NATSTrigger t: spec.topic 'a b' must be letters, digits"):
        specs.load(tmp_path)


def test_a_kubeless_file_with_a_yaml_error_still_stops(tmp_path):
    message = error_of(tmp_path, FUNCTION + "  timeout: [unclosed\n")
    assert "malformed YAML" in message


def test_memory_must_be_a_kubernetes_quantity(tmp_path):
    assert "memory 'lots'" in error_of(tmp_path, FUNCTION.replace("memory: 128Mi", "memory: lots"))
    write(tmp_path, FUNCTION.replace("memory: 128Mi", "memory: 1Gi"))
    assert specs.load(tmp_path).functions[0].memory_limit == "1Gi"


def test_an_ignored_folder_reported_by_the_watcher_is_ignored():
    ignore = specs.Ignore(["build/"])
    assert ignore.path("fn/node_modules", is_dir=True) and ignore.path("build", is_dir=True)
    assert not ignore.path("fn/lib", is_dir=True) and not ignore.path("build")  # a file named build


OLD_FUNCTION = """\
apiVersion: k8s.io/v1
kind: Function
metadata: {name: function}
spec: {handler: hello.handler, runtime: python2.7, function: "def handler(): pass"}
"""


def test_collect_loads_what_loads_and_lists_each_object_that_does_not(tmp_path):
    write(tmp_path, FUNCTION)
    (tmp_path / "python").mkdir()
    (tmp_path / "python" / "function.yaml").write_text(OLD_FUNCTION)
    (tmp_path / "broken.yaml").write_text("apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: [oops\n")
    (tmp_path / "two.yaml").write_text(
        FUNCTION.replace("name: hello", "name: again").replace("handler: handler.hello", "handler: nodot")
        + "---\napiVersion: kubeless.io/v1beta1\nkind: CronJobTrigger\nmetadata: {name: tick}\n"
        "spec: {function-name: hello, schedule: '*/5 * * * *'}\n"
    )
    (tmp_path / "zz-dup.yaml").write_text(FUNCTION)  # a second Function hello
    manifests = specs.Loader(tmp_path).collect()
    assert [f.name for f in manifests.functions] == ["hello"]
    assert [t.name for t in manifests.cron_triggers] == ["tick"]  # its file's other object loads
    errors = {e.key: e for e in manifests.errors}
    assert sorted(errors) == ["again", "broken.yaml", "function", "zz-dup.yaml"]
    assert errors["broken.yaml"].whole_file and "malformed YAML" in errors["broken.yaml"].message
    assert "apiVersion 'k8s.io/v1'" in errors["function"].message
    assert "spec.handler 'nodot'" in errors["again"].message
    assert "names must be unique" in errors["zz-dup.yaml"].message
    for error in manifests.errors:
        assert str(error.path) in error.message and "\n" not in error.message
    with pytest.raises(UserError):
        specs.load(tmp_path)  # all or nothing (push): the first error


ALIAS_BOMB = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: bomb
  labels:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
spec: {runtime: python3.11, handler: handler.hello, function: x}
"""


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_a_manifest_with_a_byte_order_mark_and_windows_line_ends_is_read(tmp_path, encoding, bom):
    """What Windows editors write (UTF-8 with a BOM, CRLF) and Windows PowerShell's `>` (UTF-16 with a BOM):
    a UTF-16 file was taken for one without Kubeless objects ("no Kubeless Function found")."""
    path = write(tmp_path, FUNCTION)
    path.write_bytes(bom + path.read_text().replace("\n", "\r\n").encode(encoding))
    assert [fn.name for fn in specs.load(tmp_path).functions] == ["hello"]


def test_an_alias_bomb_is_refused_in_one_line_naming_the_file(tmp_path):
    assert len(ALIAS_BOMB) < 1500  # 9 levels of 9: ~430 million nodes once expanded
    message = error_of(tmp_path, ALIAS_BOMB)
    assert str(tmp_path / "function.yaml") in message and "aliases expand to more than" in message
    manifests = specs.Loader(tmp_path).collect()  # dev: a ConfigError for that file, the others load
    assert [(e.key, e.whole_file) for e in manifests.errors] == [("function.yaml", True)]


def test_a_recursive_alias_is_refused(tmp_path):
    message = error_of(tmp_path, FUNCTION.replace("labels: {app: shop}", "labels: &l {app: shop, self: *l}"))
    assert "refers to itself" in message


def test_a_few_aliases_still_load(tmp_path):
    write(tmp_path, FUNCTION.replace("labels: {app: shop}", "labels: &l {app: shop}\n  x-copy: *l"))
    assert specs.load(tmp_path).functions[0].labels == {"app": "shop"}


def test_a_data_yaml_that_names_kubeless_only_in_comments_is_not_parsed(tmp_path, monkeypatch):
    write(tmp_path, FUNCTION)
    (tmp_path / "data.yaml").write_text(
        "# exported for kubeless.io; apiVersion: kubeless.io/v1beta1\nrows:  # kind: Function\n"
        + "  - {id: 1, name: x}\n" * 1000
    )
    parsed = []
    real = specs.load_documents
    monkeypatch.setattr(specs, "load_documents", lambda path, text=None: parsed.append(path.name) or real(path, text))
    assert [f.name for f in specs.load(tmp_path).functions] == ["hello"]
    assert parsed == ["function.yaml"]


@pytest.mark.parametrize(
    "text",
    [
        FUNCTION,
        '{"apiVersion": "kubeless.io/v1beta1", "kind": "Function"}\n',
        "- apiVersion: kubeless.io/v1beta1\n",
        "items:\n- {kind: HTTPTrigger, apiVersion: kubeless.io/v1beta1}\n",
    ],
)
def test_the_cheap_check_sees_manifests_in_any_style(text):
    assert specs.names_kubeless_objects(text.encode())
    assert not specs.names_kubeless_objects(b"# " + text.encode().replace(b"\n", b"\n# "))


def test_a_manifest_file_past_the_size_bound_is_a_notice_not_parsed(tmp_path, monkeypatch):
    write(tmp_path, FUNCTION)
    (tmp_path / "big.yaml").write_text(FUNCTION.replace("name: hello", "name: big") + "#" * 2000 + "\n")
    monkeypatch.setattr(specs, "MAX_MANIFEST_BYTES", 1024)
    manifests = specs.load(tmp_path)
    assert [f.name for f in manifests.functions] == ["hello"]
    assert [n for n in manifests.notices if "big.yaml: not loaded: larger than" in n]


@pytest.mark.parametrize(
    "schedule",
    ["*/5 * * * *", "@hourly", "@every 5m", "@every 1h30m", "@every .5s", "0 0 * * 0", "0 0 * * sun-sat", "? * * * ?",
     "5/15 1-5,10 1 jan-DEC mon", "0,,30 * * * *", "0 12 31 12 6"],
)  # fmt: skip
def test_schedules_the_kubeless_cli_accepts(schedule):
    assert specs.schedule_problem(schedule) is None


@pytest.mark.parametrize(
    "schedule, reason",
    [
        ("0 0 * * 7", "end of range (7) above maximum (6): 7"),
        ("* * * *", "expected exactly 5 fields, found 4"),
        ("0 0 * * * *", "found 6"),  # seconds are not standard
        ("@every 5", "failed to parse duration @every 5"),
        ("@every", "unrecognized descriptor: @every"),
        ("@reboot", "unrecognized descriptor: @reboot"),
        (" @hourly", "found 1"),
        ("60 * * * *", "end of range (60) above maximum (59)"),
        ("0 0 0 * *", "beginning of range (0) below minimum (1)"),
        ("*/0 * * * *", "step of range should be a positive number"),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1)"),
        ("1-2-3 * * * *", "too many hyphens"),
        ("x * * * *", "failed to parse int from x"),
        ("-1 * * * *", "failed to parse int from "),
        ("", "empty spec string"),
    ],
)
def test_schedules_the_kubeless_cli_refuses(schedule, reason):
    assert reason in specs.schedule_problem(schedule)


def test_an_invalid_schedule_is_exit_2_in_a_manifest_and_two_cron_triggers_on_one_function_are_a_notice(tmp_path):
    trigger = "---\napiVersion: kubeless.io/v1beta1\nkind: CronJobTrigger\nmetadata: {name: %s}\nspec: {function-name: hello, schedule: '%s'}\n"
    message = error_of(tmp_path, FUNCTION + trigger % ("weekly", "0 0 * * 7"))
    assert "CronJobTrigger weekly: spec.schedule: schedule '0 0 * * 7' is not valid" in message
    write(tmp_path, FUNCTION + trigger % ("a", "@hourly") + trigger % ("b", "@every 5m"))
    manifests = specs.load(tmp_path)
    assert [t.schedule for t in manifests.cron_triggers] == ["@hourly", "@every 5m"]
    assert [n for n in manifests.notices if "CronJobTriggers a, b all call function hello; a cluster keeps one" in n]


def test_what_is_not_a_regular_file_is_skipped_with_a_notice(tmp_path):
    """A FIFO, a socket, a dangling link or a link loop named *.yaml never hangs or stops the loader, at
    start or on a reload (issue J.7): each is a notice naming it, as the code walker says of a source folder."""
    write(tmp_path, FUNCTION)
    os.mkfifo(tmp_path / "x.yaml")  # opening it to read would block until a writer comes
    os.symlink("missing.yaml", tmp_path / "y.yaml")
    os.symlink("z.yaml", tmp_path / "z.yaml")  # a link to itself
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "s.yaml"))
    loader = specs.Loader(tmp_path)
    for _ in range(2):  # dev's start, then a reload
        found: list = []
        worker = threading.Thread(target=lambda out: out.append(loader.collect()), args=(found,), daemon=True)
        worker.start()
        worker.join(30)
        assert found, "the loader hung on the FIFO"
        manifests = found[0]
        assert [fn.name for fn in manifests.functions] == ["hello"] and manifests.errors == []
        notices = {line.split(": ", 1)[0]: line for line in manifests.notices}
        assert set(notices) == {str(tmp_path / name) for name in ("s.yaml", "x.yaml", "y.yaml", "z.yaml")}
        assert "a FIFO, not a regular file or folder, skipped" in notices[str(tmp_path / "x.yaml")]
        assert "a socket" in notices[str(tmp_path / "s.yaml")]
        assert "a broken symbolic link (to missing.yaml)" in notices[str(tmp_path / "y.yaml")]
        assert "a symbolic link loop" in notices[str(tmp_path / "z.yaml")]


def test_memory_quantities_in_bytes():
    assert specs.memory_bytes("128Mi") == 128 * 2**20
    assert specs.memory_bytes("1G") == 10**9
    assert specs.memory_bytes("1e9") == 10**9 and specs.memory_bytes("0.5Gi") == 2**29
    assert specs.memory_bytes("1500k") == 1_500_000 and specs.memory_bytes("64") == 64
    assert specs.memory_bytes("0") == 0 and specs.memory_bytes("") == 0
    with pytest.raises(UserError, match="Kubernetes quantity"):
        specs.memory_bytes("lots")
    assert specs.quantity("500m") == 0.5 and specs.quantity("2") == 2


def test_a_cpu_limit_that_is_no_quantity_is_refused(tmp_path):
    message = error_of(tmp_path, FUNCTION + CPU_LIMIT % "two")
    assert "cpu 'two' must be a Kubernetes quantity, e.g. 500m or 1" in message


CPU_LIMIT = """  deployment:
    spec:
      template:
        spec:
          containers:
          - resources: {limits: {cpu: %s}}
"""


def test_one_function_for_two_namespaces_says_which_runs_and_how_to_run_the_other(tmp_path):
    """k8s/staging/ and k8s/prod/ holding the same Function for two namespaces: names are unique per namespace
    in the cluster; here one runs by name, and the other's error says how to run it instead."""
    for namespace in ("prod", "staging"):
        (tmp_path / "k8s" / namespace).mkdir(parents=True)
        write(tmp_path / "k8s" / namespace, FUNCTION.replace("name: hello", "name: hello\n  namespace: " + namespace))
    manifests = specs.Loader(tmp_path).collect()
    assert [(f.name, f.namespace) for f in manifests.functions] == [("hello", "prod")]
    [error] = manifests.errors
    assert error.message.endswith(
        "Function hello (namespace staging) is also defined in %s (namespace prod); locally a name runs once,"
        " whatever its namespace: `dev --ignore k8s/prod/function.yaml` runs this one"
        % (tmp_path / "k8s" / "prod" / "function.yaml")
    )
    ignoring = specs.Loader(tmp_path, ignore=["k8s/prod/function.yaml"]).collect()
    assert [(f.name, f.namespace) for f in ignoring.functions] == [("hello", "staging")] and not ignoring.errors


def test_a_kustomize_patch_of_a_function_is_not_a_function_of_its_own(tmp_path):
    """base/ + overlays/prod/ (kustomize): the overlay's patch is `kind: Function` with a name and what it changes.
    It was a ConfigError row in `dev` (no handler), and `push`, which loads all or nothing, refused the project."""
    base = tmp_path / "base"
    base.mkdir()
    write(base, FUNCTION)
    (base / "kustomization.yaml").write_text("resources:\n- function.yaml\n")
    overlay = tmp_path / "overlays" / "prod"
    overlay.mkdir(parents=True)
    patch = "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: hello}\nspec: {timeout: '30'}\n"
    for name in ("replicas.yaml", "strategic.yaml", "json6902.yaml"):
        (overlay / name).write_text(patch)
    (overlay / "kustomization.yaml").write_text(
        "resources: [../../base]\n"
        "patches:\n- path: replicas.yaml\n- patch: |-\n    - op: replace\n      path: /spec/timeout\n"
        "patchesStrategicMerge: [strategic.yaml]\n"
        "patchesJson6902:\n- target: {kind: Function, name: hello}\n  path: json6902.yaml\n"
    )
    manifests = specs.Loader(tmp_path).collect()
    assert [f.name for f in manifests.functions] == ["hello"] and not manifests.errors
    assert sorted(manifests.notices) == [
        specs.patch_notice(overlay / name, overlay / "kustomization.yaml")
        for name in ("json6902.yaml", "replicas.yaml", "strategic.yaml")
    ]
    assert [f.origin for f in specs.load(tmp_path).functions] == ["%s: Function hello" % (base / "function.yaml")]
