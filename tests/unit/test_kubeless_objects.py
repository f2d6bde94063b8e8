"""kubeless_objects: a Function built from flags (`function deploy`), merged with new flags (`function
update`: each flag given replaces the deployed value, the others stay), and the Function `run` builds with
the same constructor. The printed shape itself is checked against the real Kubeless CLI in
test_kubeless_cli.py (golden files)."""

from pathlib import Path

import pytest

from kubeless_local import kubeless_objects as objects
from kubeless_local import spec as specs
from kubeless_local.errors import UserError
from kubeless_local.kubeless_objects import FunctionFlags


@pytest.fixture
def code(tmp_path):
    (tmp_path / "h.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (tmp_path / "other.py").write_text("def bye(event, context):\n    return 'bye'\n")
    (tmp_path / "requirements.txt").write_text("six\n")
    return tmp_path


@pytest.fixture
def deployed(code):
    """A Function as `function deploy` wrote it, with a value for every flag."""
    return objects.new_function(
        "hello",
        FunctionFlags(
            runtime="python3.11",
            handler="h.hello",
            from_file=str(code / "h.py"),
            dependencies=str(code / "requirements.txt"),
            env=(("K", "V"), ("A", "1")),
            labels=(("app", "shop"), ("tier", "")),
            secrets=("db",),
            memory="128Mi",
            cpu="200m",
            timeout="30",
            port=9000,
            service_port=80,
            runtime_image="me/runtime:1",
        ),
    )


def view(document):
    """The document as the session reads it."""
    return specs.parse_function(document, Path("hello.yaml"))


def test_an_update_without_flags_keeps_every_deployed_value(deployed):
    assert objects.update_function(deployed, FunctionFlags()) == deployed


@pytest.mark.parametrize(
    "flags, changed",
    [
        (FunctionFlags(env=(("K", "W"),)), lambda fn: fn.env == [("K", "W")]),
        (FunctionFlags(memory="1Gi"), lambda fn: (fn.memory_limit, fn.cpu_limit) == ("1Gi", "200m")),
        (FunctionFlags(cpu="1"), lambda fn: (fn.memory_limit, fn.cpu_limit) == ("128Mi", "1")),
        (FunctionFlags(runtime_image="me/runtime:2"), lambda fn: fn.image == "me/runtime:2"),
        (FunctionFlags(handler="h.other"), lambda fn: fn.handler == "h.other"),
        (FunctionFlags(runtime="nodejs20"), lambda fn: fn.runtime == "nodejs20"),
        (FunctionFlags(timeout="5"), lambda fn: fn.timeout == "5"),
        (FunctionFlags(secrets=("api-key",)), lambda fn: fn.secrets == [("api-key", "/api-key")]),
        (FunctionFlags(namespace="shop"), lambda fn: fn.namespace == "shop"),
    ],
)
def test_a_flag_given_replaces_its_deployed_value_and_only_it(deployed, flags, changed):
    before, after = view(deployed), view(objects.update_function(deployed, flags))
    assert changed(after) and not changed(before)
    fields = ("env", "memory_limit", "cpu_limit", "image", "handler", "runtime", "timeout", "secrets", "namespace")
    kept = [f for f in fields if getattr(before, f) == getattr(after, f)]
    assert len(kept) == len(fields) - 1
    assert (after.deps, after.function, after.checksum, after.port) == (
        before.deps,
        before.function,
        before.checksum,
        before.port,
    )


def test_labels_given_are_added_to_the_deployed_ones(deployed):
    updated = objects.update_function(deployed, FunctionFlags(labels=(("app", "web"), ("team", "a"))))
    assert updated["metadata"]["labels"] == {
        "app": "web",
        "tier": "",
        "team": "a",
        "created-by": "kubeless",
        "function": "hello",
    }
    assert updated["spec"]["service"]["selector"] == updated["metadata"]["labels"]


def test_new_code_and_deps_replace_the_inline_ones(deployed, code):
    updated = objects.update_function(
        deployed, FunctionFlags(from_file=str(code / "other.py"), dependencies=str(code / "requirements.txt"))
    )
    assert updated["spec"]["function"] == (code / "other.py").read_text()
    assert updated["spec"]["checksum"] == specs.checksum_of((code / "other.py").read_bytes())
    assert updated["spec"]["deps"] == "six\n"
    (code / "requirements.txt").write_text("requests\n")
    updated = objects.update_function(deployed, FunctionFlags(dependencies=str(code / "requirements.txt")))
    assert updated["spec"]["deps"] == "requests\n" and updated["spec"]["function"] == deployed["spec"]["function"]


def test_a_new_port_moves_the_service_port_too_unless_given(deployed):
    def ports(document):
        port = document["spec"]["service"]["ports"][0]
        return port["targetPort"], port["port"]

    assert ports(deployed) == (9000, 80)
    assert ports(objects.update_function(deployed, FunctionFlags(port=9100))) == (9100, 9100)
    assert ports(objects.update_function(deployed, FunctionFlags(service_port=81))) == (9000, 81)


def test_the_local_files_a_deployed_function_runs_from_stay_unless_new_ones_are_named(deployed, code):
    local = objects.local_files(
        deployed, FunctionFlags(from_file=str(code / "h.py"), dependencies=str(code / "requirements.txt")), code
    )
    assert local["metadata"]["annotations"] == {
        specs.SOURCE_ANNOTATION: "h.py",
        specs.DEPS_ANNOTATION: "requirements.txt",
    }
    assert "function" not in local["spec"] and local["spec"]["deps"] == ""

    updated = objects.update_function(local, FunctionFlags(timeout="9"))
    assert updated["metadata"]["annotations"] == local["metadata"]["annotations"]
    assert "function" not in updated["spec"] and "checksum" not in updated["spec"]

    updated = objects.update_function(local, FunctionFlags(from_file=str(code / "other.py")))
    assert updated["metadata"]["annotations"] == {specs.DEPS_ANNOTATION: "requirements.txt"}
    assert updated["spec"]["function"] == (code / "other.py").read_text()


def test_code_outside_the_project_or_at_a_url_stays_inline(deployed, code, tmp_path):
    project = tmp_path / "elsewhere"
    project.mkdir()
    flags = FunctionFlags(from_file=str(code / "h.py"), dependencies="http://127.0.0.1:1/requirements.txt")
    local = objects.local_files(deployed, flags, project)
    assert "annotations" not in local["metadata"] and local["spec"]["function"] == (code / "h.py").read_text()


def test_schedule_asks_for_a_cronjob_trigger_of_the_functions_name_and_is_checked(deployed):
    assert objects.schedule_trigger("hello", FunctionFlags()) is None
    trigger = objects.schedule_trigger("hello", FunctionFlags(schedule="*/5 * * * *", namespace="shop"))
    assert trigger is not None
    assert (trigger["kind"], trigger["metadata"]["name"], trigger["metadata"]["namespace"]) == (
        "CronJobTrigger",
        "hello",
        "shop",
    )
    assert trigger["spec"] == {"function-name": "hello", "schedule": "*/5 * * * *"}
    with pytest.raises(UserError, match="--schedule"):
        objects.update_function(deployed, FunctionFlags(schedule="0 0 * * 7"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (FunctionFlags(handler="h.hello", from_file="h.py"), "--runtime and --handler are required"),
        (FunctionFlags(runtime="python3.11", handler="nodot", from_file="h.py"), "--handler"),
        (FunctionFlags(runtime="python3.11", handler="h.hello", memory="lots", from_file="h.py"), "--memory 'lots'"),
        (FunctionFlags(runtime="python3.11", handler="h.hello", cpu="1 core", from_file="h.py"), "--cpu '1 core'"),
        (FunctionFlags(runtime="python3.11", handler="h.hello"), "--from-file is required"),
        (FunctionFlags(runtime="python3.11", from_file="h.py", runtime_image="me/img:1"), "--handler are required"),
        (FunctionFlags(), "or --runtime-image alone"),
    ],
)
def test_a_new_function_needs_its_flags_and_checks_them(flags, message):
    with pytest.raises(UserError, match=message):
        objects.new_function("hello", flags)


def test_an_image_alone_is_a_function_without_runtime_handler_or_code(code):
    """The Kubeless docs' `function deploy --runtime-image bitnami/tomcat:9.0 webserver` (golden: image-only)."""
    document = objects.new_function("webserver", FunctionFlags(runtime_image="bitnami/tomcat:9.0"))
    spec = document["spec"]
    assert (spec["runtime"], spec["handler"], spec["function"], spec["checksum"]) == ("", "", "", "")
    assert objects.runtime_container(document)["image"] == "bitnami/tomcat:9.0"
    updated = objects.update_function(document, FunctionFlags(env=(("K", "V"),)))
    assert updated["spec"]["runtime"] == "" and objects.runtime_container(updated)["image"] == "bitnami/tomcat:9.0"
    with_code = FunctionFlags(runtime_image="me/img:1", handler="h.hello", from_file=str(code / "h.py"))  # as Kubeless
    assert objects.new_function("hello", with_code)["spec"]["handler"] == "h.hello"


def test_run_builds_its_function_as_deploy_does(code):
    """`run` and `function deploy` share the constructor: the same flags give the same pod template."""
    ran = objects.function_from_files(
        "hello",
        code / "h.py",
        "python3.11",
        "h.hello",
        env=[("K", "V")],
        memory="128Mi",
        secrets=["db"],
        image="me/runtime:1",
        timeout="30",
    )
    flags = FunctionFlags(
        runtime="python3.11",
        handler="h.hello",
        from_file=str(code / "h.py"),
        env=(("K", "V"),),
        secrets=("db",),
        memory="128Mi",
        timeout="30",
        runtime_image="me/runtime:1",
    )
    deployed = objects.new_function("hello", flags)
    assert ran.document["spec"]["deployment"] == deployed["spec"]["deployment"]
    assert ran.document["spec"]["service"] == deployed["spec"]["service"]
    assert (ran.env, ran.memory_limit, ran.secrets, ran.image, ran.timeout) == (
        [("K", "V")],
        "128Mi",
        [("db", "/db")],
        "me/runtime:1",
        "30",
    )
    assert ran.annotations == {specs.SOURCE_ANNOTATION: str(code / "h.py")} and ran.source == code / "h.py"


def test_function_spec_reads_the_pod_template(deployed):
    deployed["spec"]["deployment"]["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 2000, "fsGroup": 3}
    objects.runtime_container(deployed)["securityContext"] = {"runAsUser": 0}
    fn = view(deployed)
    assert fn.container == objects.runtime_container(deployed)
    assert fn.pod == objects.pod_template(deployed)
    assert (fn.memory_limit, fn.cpu_limit) == ("128Mi", "200m")
    assert fn.security_context == {"runAsUser": 0, "fsGroup": 3}  # the container's key wins
    bare = view(
        {
            "kind": "Function",
            "metadata": {"name": "b"},
            "spec": {"runtime": "python3.11", "handler": "h.b", "function": "x"},
        }
    )
    assert (bare.pod, bare.container, bare.memory_limit, bare.cpu_limit, bare.security_context) == (
        {},
        {},
        "0",
        "0",
        {},
    )


def test_pod_template_is_made_where_missing_for_writing():
    document: dict = {"spec": {}}
    pod = objects.pod_template(document, create=True)
    pod["containers"] = [{"name": ""}]
    assert document["spec"]["deployment"]["spec"]["template"]["spec"] is pod
    assert objects.runtime_container(document) == {"name": ""} and objects.pod_template({}) == {}
