"""The container env's `valueFrom`, resolved as the kubelet resolves it for the pod (podenv.py)."""

import os
import socket

import pytest
from test_prepare import runtime as prepared_runtime

from kubeless_local import podenv
from kubeless_local import spec as specs
from kubeless_local.emulator import prepare as prep

MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  namespace: shop
  labels: {app: cart}
  annotations: {local.kubeless.io/source: handler.py, team: payments}
spec:
  runtime: python3.11
  handler: handler.hello
  deployment:
    spec:
      template:
        spec:
          containers:
          - resources: {limits: {memory: 256Mi, cpu: 1500m}}
            envFrom:
            - {secretRef: {name: db}, prefix: DB_}
            - configMapRef: {name: flags, optional: true}
            env:
            - {name: PLAIN, value: "1"}
            - {name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
            - {name: LEVEL, valueFrom: {configMapKeyRef: {name: settings, key: level}}}
            - {name: OPTIONAL, valueFrom: {secretKeyRef: {name: db, key: other, optional: true}}}
            - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
            - {name: CREATED_BY, valueFrom: {fieldRef: {fieldPath: "metadata.labels['created-by']"}}}
            - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['team']"}}}
            - {name: NO_LABEL, valueFrom: {fieldRef: {fieldPath: "metadata.labels['none']"}}}
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
            - {name: MEMORY_MIB, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
            - {name: CPUS, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
            - {name: MILLICPUS, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
"""


def project(tmp_path, secrets=None, configmaps=None):
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (tmp_path / "function.yaml").write_text(MANIFEST)
    for folder, keys in (("secrets", secrets or {}), ("configmaps", configmaps or {})):
        for path, value in keys.items():
            (tmp_path / folder / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / path).write_text(value)
    [fn] = specs.load(tmp_path).functions
    return fn


def test_each_kind_of_value_is_resolved_as_in_the_pod(tmp_path):
    fn = project(tmp_path, secrets={"db/password": "s3cret\n"}, configmaps={"settings/level": "debug"})
    assert dict(fn.env) == {
        "DB_password": "s3cret\n",  # envFrom: every key of the secret, prefixed
        "PLAIN": "1",
        "PASSWORD": "s3cret\n",  # the file's bytes, as the kubelet gives a key's
        "LEVEL": "debug",
        "POD": "hello-local",
        "NAMESPACE": "shop",
        "APP": "cart",
        "CREATED_BY": "kubeless",  # the controller's label on the pod
        "TEAM": "payments",
        "NO_LABEL": "",
        "POD_IP": "127.0.0.1",
        "NODE": socket.gethostname(),
        "MEMORY_MIB": "256",
        "CPUS": "2",  # 1.5 cores, rounded up
        "MILLICPUS": "1500",
    }
    assert podenv.variables(fn)[1] == [
        "envFrom ConfigMap flags (optional): no folder %s; its keys are left unset" % (tmp_path / "configmaps/flags"),
        "env OPTIONAL: from key other of Secret db (optional): no file %s; left unset"
        % (tmp_path / "secrets/db/other"),
        "env UID: fieldRef metadata.uid is not resolved here; left unset",
    ]


def test_what_cannot_be_resolved_is_left_unset_not_empty(tmp_path):
    fn = project(tmp_path)
    env = dict(fn.env)
    assert "PASSWORD" not in env and "LEVEL" not in env and env["PLAIN"] == "1"
    assert (
        "env PASSWORD: from key password of Secret db: no file %s; left unset" % (tmp_path / "secrets/db/password")
        in podenv.variables(fn)[1]
    )


def test_without_a_limit_a_resource_is_what_this_machine_has(tmp_path):
    fn = project(tmp_path)
    fn.container["resources"] = {}
    env = dict(fn.env)
    assert env["CPUS"] == str(os.cpu_count()) and int(env["MEMORY_MIB"]) > 256


def test_an_env_entry_wins_over_an_envfrom_key_of_the_same_name(tmp_path):
    fn = project(tmp_path, secrets={"db/password": "s3cret", "db/PLAIN": "from the secret"})
    fn.container["envFrom"][0]["prefix"] = ""
    assert dict(fn.env)["PLAIN"] == "1" and dict(fn.env)["password"] == "s3cret"


@pytest.mark.parametrize("saved", ["secrets/db/password", "configmaps/settings/level"])
def test_a_saved_key_file_restarts_the_function_with_its_value(tmp_path, saved, monkeypatch):
    """It is watched with the code, and the server is started again (a reload in place keeps the old env)."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    fn = project(tmp_path, secrets={"db/password": "one"}, configmaps={"settings/level": "one"})
    assert tmp_path / saved in fn.watched_paths()
    runtime = prepared_runtime(reload="signal")  # (no runtime library to install)
    first = prep.prepare(fn, runtime, tmp_path / "state")
    assert prep.Generation(prep.prepare(fn, runtime, tmp_path / "state", previous=first), first).reloads_in_place
    (tmp_path / saved).write_text("two")
    second = prep.prepare(fn, runtime, tmp_path / "state", previous=first)
    assert not prep.Generation(second, first).reloads_in_place
    assert "two" in dict(second.user_env).values()


def test_what_the_kubeless_verbs_show_is_the_manifest_not_a_secrets_value(tmp_path):
    """`kubeless function ls|describe` print the Function's env as the manifest writes it, as in the cluster."""
    from kubeless_local.emulator.supervisor import spec_fields

    fn = project(tmp_path, secrets={"db/password": "s3cret"})
    shown = spec_fields(fn)["env"]
    assert shown["PLAIN"] == "1" and shown["PASSWORD"] == "" and "s3cret" not in repr(shown)


@pytest.mark.parametrize(
    "value, expected",  # Kubernetes' own expansion vectors (third_party/forked/golang/expansion)
    [
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)$(VAR_B)", "AB"),
        ("$(VAR_DNE)", "$(VAR_DNE)"),  # not defined: as written
        ("$$(VAR_A)", "$(VAR_A)"),  # escaped
        ("$$$(VAR_A)", "$A"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("$(VAR_A", "$(VAR_A"),  # not closed
        ("$VAR_A", "$VAR_A"),
        ("foo$", "foo$"),
        ("$()", "$()"),
        ("$(VAR_A $(VAR_B)", "$(VAR_A $(VAR_B)"),  # the name runs to the first `)`
        ("(($(VAR_A)))", "((A))"),
    ],
)
def test_a_value_expands_the_variables_defined_before_it(value, expected):
    assert podenv.expand(value, {"VAR_A": "A", "VAR_B": "B"}) == expected


def test_an_env_value_names_the_variables_above_it_not_below_nor_a_valuefrom(tmp_path):
    """As the kubelet makes the env: envFrom's keys, then each `env` entry in order; a `value` may name what is
    defined above it (`$(NAME)`), a later one stays as written, a valueFrom's value is never expanded."""
    fn = project(tmp_path, secrets={"db/password": "s3cret", "db/raw": "$(PLAIN)"})
    fn.container["env"] = [
        {"name": "URL", "value": "postgres://app:$(DB_password)@db/$(NAME)"},  # NAME: defined below
        {"name": "NAME", "value": "orders"},
        {"name": "AGAIN", "value": "$(NAME)/$(URL)"},
        {"name": "RAW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "raw"}}},
        {"name": "PLAIN", "value": "1"},
        {"name": "ESCAPED", "value": "$$(PLAIN)"},
    ]
    env = dict(fn.env)
    assert env["URL"] == "postgres://app:s3cret@db/$(NAME)"
    assert env["AGAIN"] == "orders/postgres://app:s3cret@db/$(NAME)"
    assert (env["RAW"], env["ESCAPED"]) == ("$(PLAIN)", "$(PLAIN)")
