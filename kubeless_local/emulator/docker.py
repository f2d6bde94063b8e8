"""Runs each function in its runtime image: one long-lived container per function (contract §4).

Layout inside a container of our own images (label io.kubeless-local.runtime):
  /kubeless-local/function   <state>/functions/<name>, read-only: gen-N/, build-N/ and the `kubeless`
                             and `build` links that the engine switches on every reload
  /kubeless                  a link in the image to /kubeless-local/function/kubeless (the current code)
  /kubeless-local/deps       the dependency folder (installed once per sha256 of the deps file by an
                             install step that runs in the runtime image), read-only
  /kubeless-local/ca.crt     the host's CA bundle, read-only (exported as SSL_CERT_FILE & co)
Other images (an override from PYTHON3.11_RUNTIME / runtime-images, or a custom --runtime-image) get
the prepared code folder mounted at /kubeless itself; they reload by a new container and are ready
when /healthz answers on FUNC_PORT.

Containers use the host network (never the default bridge) and bind 127.0.0.1 (KUBELESS_LOCAL_BIND).
"""
import codecs
import os
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

from kubeless_local.emulator import images
from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.base import Backend, State, handle_output
from kubeless_local.errors import UserError
from kubeless_local.paths import cache_dir
from kubeless_local.runtimes import RUNTIME_RE, Catalog, Runtime
from kubeless_local.spec import sha256_hex

FUNCTION_MOUNT = "/kubeless-local/function"
DEPS_MOUNT = "/kubeless-local/deps"
LIB_MOUNT = "/kubeless-local/runtime-lib"
CA_MOUNT = "/kubeless-local/ca.crt"
INSTALL = "/kubeless"
LABEL_FUNCTION = "kubeless-local.function"
LABEL_PROJECT = "kubeless-local.project"
LABEL_STEP = "kubeless-local.step"
DEFAULT_USER = 1000  # Kubeless' default securityContext {runAsUser: 1000, fsGroup: 1000}
CA_ENV = ("SSL_CERT_FILE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE")
PASS_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "GOPROXY", "GOSUMDB",
            "GONOSUMDB", "GOPRIVATE", "GOFLAGS_EXTRA", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "NPM_CONFIG_REGISTRY")
QUANTITY_RE = re.compile(r"^([0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m)?$")
UNITS = {None: 1, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
         "k": 10 ** 3, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18, "m": 1e-3}


def memory_bytes(quantity, origin=""):
    """A Kubernetes quantity ("128Mi", "1G", "0") in bytes; 0 = no limit."""
    text = str(quantity or "0").strip()
    match = QUANTITY_RE.match(text)
    if not match:
        raise UserError("%s: memory limit %r is not a Kubernetes quantity (e.g. 128Mi)" % (origin, text))
    return int(float(match.group(1)) * UNITS[match.group(2)])


def security_context(spec):
    """(user, group, extra groups) the runtime container runs as: the Deployment's securityContext
    (container-level wins over pod-level), else Kubeless' default 1000 with fsGroup 1000."""
    pod = (((spec.deployment.get("spec") or {}).get("template") or {}).get("spec") or {})
    container = ((pod.get("containers") or [{}])[0] or {})
    pod_ctx, ctx = pod.get("securityContext") or {}, container.get("securityContext") or {}
    if not pod_ctx and not ctx:
        return DEFAULT_USER, DEFAULT_USER, []
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser", DEFAULT_USER))
    group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", user))
    fs_group = pod_ctx.get("fsGroup")
    extra = [str(g) for g in (pod_ctx.get("supplementalGroups") or [])]
    if fs_group is not None and str(fs_group) != str(group):
        extra.append(str(fs_group))
    return int(user), int(group), extra


def custom_runtime(spec):
    """A runtime for an image the catalog does not know: the code file keeps no extension (§4)."""
    match = RUNTIME_RE.match(spec.runtime or "")
    runtime_id, version = match.groups() if match else ("custom", "")
    return Runtime(id=runtime_id or "custom", version=version, server="", dep_name="", suffix="", executable="",
                   probe=(), expect="", image=spec.image, process={"reload": "restart"})


class DockerPrepared(prep.Prepared):
    """A Prepared whose tool paths are container paths; messages map back to the user's files."""

    image: str = ""
    own: bool = True  # our runtime image: /kubeless follows the link, control lines, signal reload
    install_image: str = ""

    def map_paths(self, text):
        source = self.spec.source
        if source is None:
            return text
        base = source if source.is_dir() else source.parent
        file_name = self.spec.module + self.runtime.suffix
        folders = [FUNCTION_MOUNT + "/" + self.code_dir.name, FUNCTION_MOUNT + "/kubeless", INSTALL,
                   str(self.code_dir), str(self.install_link)]
        for folder in folders:
            text = text.replace(folder + "/" + file_name, str(source) if source.is_file() else str(base / file_name))
            text = text.replace(folder + "/", str(base) + "/")
        return text


class _Handle:
    def __init__(self, container, prepared, generation):
        self.container = container
        self.prepared = prepared
        self.generation = generation  # synthesized control generations for images without control lines
        self.exited = threading.Event()
        self.stopping = False


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, logs, client=None, catalog=None):
        self.logs = logs
        self._client = client
        self.catalog = catalog
        self.swept = set()
        self.lock = threading.Lock()
        self._by_name = {}  # function name -> _Handle of its running container

    # ------------------------------------------------------------ engine and runtimes

    @property
    def client(self):
        if self._client is None:
            self._client = images.docker_client()
        return self._client

    def check(self):
        self.client  # noqa: B018 - raises UserError with the fix when no engine answers

    def _catalog(self, catalog=None):
        self.catalog = catalog or self.catalog or Catalog()
        return self.catalog

    def settings(self, runtime):
        if not runtime.server:
            return {"reload": "restart"}
        return images.docker_settings(runtime, self._catalog())

    def resolve(self, spec, catalog):
        """(runtime, notice): the catalog's runtime (no local toolchain needed), or a custom one for an
        image of a runtime the catalog does not know. Raises UserError when the image is missing."""
        self._catalog(catalog)
        notice = None
        try:
            runtime, notice = catalog.resolve(spec.runtime, require_local=False)
        except UserError:
            if not spec.image:
                raise
            runtime = custom_runtime(spec)
        image = spec.image or images.image_for(runtime).image
        present = images.image_present(self.client, image)
        if present is not None and not spec.image and not images.image_for(runtime).overridden \
                and images.is_stale(present, runtime, catalog):
            stale = "image %s was built from other runtime files than this kubeless-local's; rebuild it with " \
                    "`kubeless-local runtime build %s`" % (image, runtime.name)
            notice = "%s\n%s" % (notice, stale) if notice else stale
        if present is None:
            if spec.image or images.image_for(runtime).overridden:
                raise UserError("%s: image %s is not present and cannot be pulled here; `docker build`/`docker pull` "
                                "it or use --backend process" % (spec.origin, image))
            raise UserError("%s: the %s image %s is not built; run `kubeless-local runtime build %s` or use "
                            "--backend process" % (spec.origin, runtime.name, image, runtime.name))
        return runtime, notice

    # ------------------------------------------------------------ leftovers

    def sweep(self, state_dir):
        """Remove containers a crashed run of this project left behind (once per project)."""
        key = str(Path(state_dir).resolve())
        with self.lock:
            if key in self.swept:
                return
            for container in self.client.containers.list(all=True, filters={"label": "%s=%s" % (LABEL_PROJECT, key)}):
                try:
                    container.remove(force=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self.swept.add(key)

    # ------------------------------------------------------------ prepare (install / check / compile in the image)

    def prepare(self, spec, runtime, state_dir, on_line=lambda line: None, previous=None):
        """prepare.prepare for containers: same layout, steps run in the runtime image."""
        self.sweep(state_dir)
        root = Path(state_dir) / "functions" / spec.name
        root.mkdir(parents=True, exist_ok=True)
        generation = prep.next_generation(root)
        code_dir = root / ("gen-%d" % generation)
        shutil.rmtree(code_dir, ignore_errors=True)
        code_dir.mkdir()
        deps = prep.layout_code(spec, runtime, code_dir)
        choice = images.image_for(runtime) if runtime.server else images.ImageChoice(spec.image, "custom")
        image = spec.image or choice.image
        own = self._own(image)
        settings = self.settings(runtime)
        prepared = DockerPrepared(spec=spec, runtime=runtime, root=root, generation=generation, code_dir=code_dir,
                                  deps_dir=code_dir, runtime_lib=code_dir)
        prepared.image, prepared.own, prepared.install_image = image, own, choice.install_image or image
        prepared.placeholders = {
            "exe": "", "version": runtime.version, "runtime_dir": "/runtime", "install": INSTALL,
            "deps": DEPS_MOUNT, "deps_file": "%s/%s" % (DEPS_MOUNT, runtime.dep_name),
            "file": "%s/%s%s" % (INSTALL, spec.module, runtime.suffix), "module": spec.module,
            "handler": spec.function_name, "build": FUNCTION_MOUNT + "/build", "runtime_lib": LIB_MOUNT,
        }
        prepared.runtime_lib = self.runtime_lib(prepared, settings, on_line)
        if previous is not None and previous.deps_hash == sha256_hex(deps.encode()) and deps.strip():
            prepared.deps_dir, prepared.deps_hash = previous.deps_dir, previous.deps_hash
        else:
            prepared.deps_dir, prepared.deps_hash = self.install_deps(prepared, settings, deps, on_line)
        here = {"install": "%s/%s" % (FUNCTION_MOUNT, code_dir.name),
                "file": "%s/%s/%s%s" % (FUNCTION_MOUNT, code_dir.name, spec.module, runtime.suffix)}
        if settings.get("check") and own:
            self.check_in_container(prepared, settings, here)
        if settings.get("compile"):
            prepared.build_dir = root / ("build-%d" % generation)
            shutil.rmtree(prepared.build_dir, ignore_errors=True)
            prepared.build_dir.mkdir()
            argv = prepared.expand(settings["compile"], build="%s/%s" % (FUNCTION_MOUNT, prepared.build_dir.name), **here)
            env = self.step_env(prepared, settings, {"KUBELESS_FUNC_NAME": spec.function_name,
                                                      "KUBELESS_INSTALL_VOLUME": here["install"]})
            mounts = {str(root): {"bind": FUNCTION_MOUNT, "mode": "rw"},
                      str(prepared.deps_dir): {"bind": DEPS_MOUNT, "mode": "ro"}}
            if prepared.runtime_lib != code_dir:
                mounts[str(prepared.runtime_lib)] = {"bind": LIB_MOUNT, "mode": "rw"}
            image_id = images.image_present(self.client, image)
            prep.compile_cached(prepared, (argv, image_id.id if image_id is not None else image), lambda: self.run_step(
                "compile", image, argv, mounts, env, FUNCTION_MOUNT + "/" + prepared.build_dir.name, spec.name,
                lambda line: None))
        return prepared

    def _own(self, image):
        try:
            found = self.client.images.get(image)
        except Exception:  # noqa: BLE001 - resolve() already reported a missing image
            return False
        return bool((found.labels or {}).get(images.OWN_LABEL))

    def step_env(self, prepared, settings, extra):
        """Env of an install/compile step: user env, the step's variables, phase env, CA and proxies."""
        env = {k: v for k, v in prepared.spec.env}
        env.update({"HOME": "/tmp", "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        env.update(extra)
        for key, value in (settings.get("env") or {}).items():
            env[key] = str(value).format_map(prepared.placeholders)
        for key in PASS_ENV:
            if os.environ.get(key) and key not in env:
                env[key] = os.environ[key]
        if images.host_ca_bundle():
            env.update({key: CA_MOUNT for key in CA_ENV})
        return env

    def _ca_mount(self, mounts):
        ca = images.host_ca_bundle()
        if ca:
            mounts[os.path.realpath(ca)] = {"bind": CA_MOUNT, "mode": "ro"}
        return mounts

    def run_step(self, step, image, argv, mounts, env, workdir, function, on_line):
        """Run a one-shot step container as the host user (files stay the user's); StepFailed on failure."""
        container = self.client.containers.create(
            image, argv, user="%d:%d" % (os.getuid(), os.getgid()), working_dir=workdir, environment=env,
            volumes=self._ca_mount(dict(mounts)), network_mode="host", init=True, detach=True,
            labels={LABEL_FUNCTION: function, LABEL_STEP: step})
        lines = []
        try:
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode("utf-8", "replace").splitlines():
                    lines.append(line)
                    on_line(line)
            code = container.wait().get("StatusCode", 1)
        finally:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001
                pass
        if code != 0:
            output = "\n".join(lines).strip() or "%s exited with code %d" % (argv[0], code)
            raise prep.StepFailed(step, output)

    def runtime_lib(self, prepared, settings, on_line):
        """A writable copy of the image's runtime_lib (Go: server modules + warm build cache), per image."""
        source = settings.get("runtime_lib")
        if not source:
            return prepared.code_dir
        image_id = self.client.images.get(prepared.image).id.split(":")[-1][:16]
        folder = cache_dir() / "docker" / "runtime-lib" / ("%s-%s" % (prepared.runtime.name, image_id))

        def seed(target):
            on_line("seeding the %s build cache from %s (once)" % (prepared.runtime.name, prepared.image))
            self.run_step("runtime setup", prepared.image, ["/bin/sh", "-c", "cp -R %s/. %s/" % (source, LIB_MOUNT)],
                          {str(target): {"bind": LIB_MOUNT, "mode": "rw"}}, {"HOME": "/tmp"}, "/", prepared.spec.name,
                          on_line)

        return prep.cached_step(folder, seed)

    def install_deps(self, prepared, settings, deps, on_line):
        runtime = prepared.runtime
        install = settings.get("install")
        if not deps.strip() or not install:
            folder = cache_dir() / "docker-deps" / (runtime.name or "custom") / "none"
            folder.mkdir(parents=True, exist_ok=True)
            return folder, ""
        digest = sha256_hex(deps.encode())
        folder = cache_dir() / "docker-deps" / runtime.name / digest

        def build(target):
            (target / runtime.dep_name).write_text(deps)
            on_line("installing %s in %s (sha256 %s…)" % (runtime.dep_name, prepared.install_image, digest[:12]))
            env = self.step_env(prepared, settings, {"KUBELESS_INSTALL_VOLUME": DEPS_MOUNT,
                                                      "KUBELESS_DEPS_FILE": prepared.placeholders["deps_file"]})
            self.run_step("dependency install", prepared.install_image, prepared.expand(install),
                          {str(target): {"bind": DEPS_MOUNT, "mode": "rw"}}, env, DEPS_MOUNT, prepared.spec.name, on_line)

        return prep.cached_step(folder, build), digest

    def check_in_container(self, prepared, settings, here):
        """The catalog's check (php -l, node --check) in the function's running container (fast: no new
        container); skipped when none runs yet (the server's load-failed covers a first start)."""
        handle = self._running_handle(prepared.spec.name)
        if handle is None or not handle.prepared.own:
            return
        argv = prepared.expand(settings["check"], **here)
        code, output = handle.container.exec_run(argv, workdir=FUNCTION_MOUNT, environment={"HOME": "/tmp"})
        if code != 0:
            raise prep.StepFailed("check", (output or b"").decode("utf-8", "replace").strip())

    def _running_handle(self, name):
        with self.lock:
            handle = self._by_name.get(name)
        return handle if handle is not None and not handle.exited.is_set() else None

    # ------------------------------------------------------------ the runtime container

    def container_name(self, prepared):
        project = sha256_hex(str(prepared.root.parent.parent.resolve()).encode())[:8]
        return "kubeless-local-%s-%s" % (prepared.spec.name, project)

    def container_env(self, instance, prepared, settings):
        env = prep.function_env(prepared.spec, instance.port, INSTALL)
        for key, value in (settings.get("env") or {}).items():
            env[key] = str(value).format_map(prepared.placeholders)
        if images.host_ca_bundle():
            env.setdefault("SSL_CERT_FILE", CA_MOUNT)
            env.setdefault("NODE_EXTRA_CA_CERTS", CA_MOUNT)
        return env

    def container_options(self, instance, prepared):
        """Everything containers.create gets (split out so tests can check it without an engine)."""
        spec = prepared.spec
        settings = self.settings(prepared.runtime)
        user, group, extra_groups = security_context(spec)
        mounts = {str(prepared.deps_dir): {"bind": DEPS_MOUNT, "mode": "ro"}}
        if prepared.own:
            mounts[str(prepared.root.resolve())] = {"bind": FUNCTION_MOUNT, "mode": "ro"}
        else:
            mounts[str(prepared.code_dir.resolve())] = {"bind": INSTALL, "mode": "ro"}
        options = {
            "image": prepared.image, "name": self.container_name(prepared), "detach": True, "init": True,
            "environment": self.container_env(instance, prepared, settings), "network_mode": "host",
            "user": "%d:%d" % (user, group), "volumes": self._ca_mount(mounts),
            "labels": {LABEL_FUNCTION: spec.name, LABEL_PROJECT: str(prepared.root.parent.parent.resolve()),
                       "kubeless-local.runtime": prepared.runtime.name},
            "working_dir": INSTALL if prepared.own else None,
        }
        if extra_groups:
            options["group_add"] = extra_groups
        if prepared.own and settings.get("command"):
            options["command"] = prepared.expand(settings["command"])
        limit = memory_bytes(spec.memory_limit, spec.origin)
        if limit:
            options["mem_limit"] = limit
            options["memswap_limit"] = limit
        return {k: v for k, v in options.items() if v is not None}

    def start(self, instance, prepared, generation=0):
        from docker.errors import APIError, NotFound

        options = self.container_options(instance, prepared)
        try:
            self.client.containers.get(options["name"]).remove(force=True)  # a leftover of a crashed run
        except NotFound:
            pass
        try:
            container = self.client.containers.create(**options)
        except APIError as exc:
            instance.set_state(State.CRASHED, "cannot create the container: %s" % (exc.explanation or exc))
            return
        handle = _Handle(container, prepared, generation)
        instance.handle, instance.container, instance.pid = handle, container.id[:12], None
        with self.lock:
            self._by_name[prepared.spec.name] = handle
        try:
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            container.start()
        except APIError as exc:
            handle.exited.set()
            instance.set_state(State.CRASHED, "cannot start the container: %s" % (exc.explanation or exc))
            return
        try:
            container.reload()
            instance.pid = container.attrs["State"]["Pid"] or None  # the container's init, as the host sees it
        except (APIError, KeyError):
            pass
        threading.Thread(target=self._pump, args=(instance, handle, stream), daemon=True).start()
        if not prepared.own:
            threading.Thread(target=self._poll_health, args=(instance, handle), daemon=True).start()

    def _pump(self, instance, handle, stream):
        decoders = {"stdout": codecs.getincrementaldecoder("utf-8")("replace"),
                    "stderr": codecs.getincrementaldecoder("utf-8")("replace")}
        pending = {"stdout": "", "stderr": ""}
        prepared = handle.prepared
        try:
            for out, err in stream:
                for name, chunk in (("stdout", out), ("stderr", err)):
                    if not chunk:
                        continue
                    pending[name] += decoders[name].decode(chunk)
                    *lines, pending[name] = pending[name].split("\n")
                    for line in lines:
                        handle_output(instance, self.logs, line.rstrip("\r"), name, prepared.map_paths)
        except Exception:  # noqa: BLE001 - the connection closes when the container is removed
            pass
        for name, rest in pending.items():
            if rest.strip():
                handle_output(instance, self.logs, rest, name, prepared.map_paths)
        code = None
        if not handle.stopping:
            try:
                code = handle.container.wait(timeout=10).get("StatusCode")
            except Exception:  # noqa: BLE001
                code = None
        handle.exited.set()
        if instance.handle is handle and not handle.stopping and instance.state != State.STOPPED:
            if instance.state == State.COMPILE_ERROR:
                instance.set_state(State.COMPILE_ERROR, instance.error)
            else:
                tail = "\n".join(line.text for line in self.logs.tail(instance.name, 5))
                reason = " (out of memory: raise the memory limit)" if code == 137 and prepared.spec.memory_limit != "0" else ""
                instance.set_state(State.CRASHED, "the container exited with code %s%s\n%s" % (code, reason, tail))
                self.on_exit(instance)

    def _poll_health(self, instance, handle):
        """Images without control lines: Ready once /healthz answers 200."""
        while not handle.exited.is_set() and instance.handle is handle:
            try:
                with urllib.request.urlopen(instance.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        instance.on_control("ready", handle.generation)
                        return
            except OSError:
                pass
            time.sleep(0.1)

    def alive(self, instance):
        handle = instance.handle
        return isinstance(handle, _Handle) and not handle.exited.is_set()

    def reload(self, instance, prepared):
        handle = instance.handle
        if prepared.own and prepared.runtime.reload == "signal" and self.alive(instance):
            handle.prepared = prepared  # messages now map this generation's paths
            handle.container.kill(signal="SIGHUP")
            return "signal"
        generation = instance.last_control[1] + 1
        self.stop(instance)
        self.start(instance, prepared, generation=generation if not prepared.own else 0)
        return "restart"

    def stop(self, instance):
        handle, instance.handle = instance.handle, None
        if not isinstance(handle, _Handle):
            return
        handle.stopping = True
        with self.lock:
            if self._by_name.get(instance.name) is handle:
                del self._by_name[instance.name]
        try:
            handle.container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        handle.exited.set()
