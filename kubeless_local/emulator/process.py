"""Runs each function's runtime server as a local process (the embedded default backend): forked from the
runtime's template process where the catalog has one (emulator/forkserver.py), else a fresh one; `run` may
have started the template or the server itself already (emulator/headstart.py): claimed here."""

import os
import signal
import subprocess
import threading
from typing import IO, Optional, Union

from kubeless_local.emulator import headstart, memorywatch, strays
from kubeless_local.emulator.base import CONTROL_PREFIX, Backend, Instance, State, handle_output
from kubeless_local.emulator.forkserver import Forked, Template
from kubeless_local.emulator.guardian import PROJECT_ENV
from kubeless_local.emulator.logs import LineSplitter
from kubeless_local.emulator.machineenv import machine_env
from kubeless_local.emulator.prepare import Prepared
from kubeless_local.emulator.prestart import CONTROL_FD, Spawned
from kubeless_local.errors import UserError

ServerProcess = Union[subprocess.Popen, Forked, Spawned]  # started fresh, forked by a template, or head-started
MEMORY_LIMIT_ENV = "KUBELESS_LOCAL_MEMORY_LIMIT_BYTES"
NO_MEMORY_LIMIT = (
    "its memory limit %s is not held on this system (no /proc/<pid>/smaps_rollup); --backend docker holds it"
)


def server_process(instance: Instance) -> Optional[ServerProcess]:
    """The instance's server process (its backend-private handle), if one was started."""
    return instance.handle if isinstance(instance.handle, (subprocess.Popen, Forked, Spawned)) else None


class ProcessBackend(Backend):
    name = "process"
    fronted = True  # the server binds instance.server_port; the supervisor's front door serves instance.port

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.templates: dict[tuple[str, ...], Template] = {}  # by their argv: one per toolchain and library
        self.templates_lock = threading.Lock()
        self.memory = memorywatch.MemoryWatch()  # servers with a memory limit (started with the first)
        self.out_of_memory: dict[int, str] = {}  # server pid → why it was killed

    def _template(self, instance: Instance, prepared: Prepared, env: dict[str, str]) -> Optional[Template]:
        if not prepared.runtime.steps.template:
            return None
        argv = prepared.expand(prepared.runtime.steps.template, control_fd=CONTROL_FD)
        with self.templates_lock:
            template = self.templates.get(tuple(argv))
            if template is None or template.broken:
                # this machine's env, not the first function's: a function whose own env sets an interpreter
                # variable (PYTHONWARNINGS…) is refused by the template, the others are not
                own = {**machine_env(), PROJECT_ENV: env[PROJECT_ENV]}
                template = headstart.claim_template(instance.runtime, argv, own, self.guardian)  # `run`'s
                template = self.templates[tuple(argv)] = template or Template(argv, own, self.guardian)
            return template

    def _spawn(self, instance: Instance, prepared: Prepared, argv: list[str], env: dict[str, str]):
        """The server: forked from the runtime's template, or the one `run` started ahead (not under a
        debugger), else a fresh process."""
        template = self._template(instance, prepared, env) if instance.debug is None else None
        started: Optional[ServerProcess] = None
        if template is not None:
            started = template.spawn(argv, env, str(prepared.install_link))
        elif instance.debug is None and prepared.runtime.steps.held:
            held = prepared.expand(prepared.runtime.steps.held)
            started = headstart.claim_held(instance.runtime, held, env, str(prepared.install_link))
        return started or subprocess.Popen(
            argv,
            cwd=prepared.install_link,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )  # its own process group: Ctrl-C goes to `dev`, stop() kills the group

    def start(self, instance: Instance, prepared: Prepared) -> None:
        argv = prepared.expand(prepared.runtime.steps.command)
        env = prepared.env(instance.listen_port)
        env[PROJECT_ENV] = str(prepared.root.parent.parent.resolve())  # found by the guardian and the next `dev`
        limit = prepared.spec.memory_limit_bytes
        if limit:  # what a runtime sizes itself by in the pod (the JVM's heap: run.sh)
            env[MEMORY_LIMIT_ENV] = str(limit)
        if instance.debug is not None:  # its debugger's port, and a timeout no paused call reaches
            try:
                env.update(
                    instance.debug.env(
                        prepared.placeholders["exe"], lambda line: handle_output(instance, self.logs, line, "stderr")
                    )
                )
            except UserError as exc:  # Delve cannot be built here
                instance.set_state(State.CRASHED, str(exc))
                return
        try:
            proc = self._spawn(instance, prepared, argv, env)
        except OSError as exc:
            instance.set_state(State.CRASHED, "cannot start %s: %s" % (argv[0], exc))
            return
        instance.pid, instance.handle = proc.pid, proc
        if self.guardian is not None:
            self.guardian.watch(proc.pid)  # the server's process group dies with `dev`, even on kill -9
        if limit:
            self._hold_to_its_memory_limit(instance, prepared.spec.memory_limit, limit, proc)
        pumps = [
            threading.Thread(target=self._pump, args=(instance, proc.stdout, "stdout", prepared), daemon=True),
            threading.Thread(target=self._pump, args=(instance, proc.stderr, "stderr", prepared), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        threading.Thread(target=self._watch, args=(instance, proc, pumps), daemon=True).start()

    def _hold_to_its_memory_limit(self, instance: Instance, quantity: str, limit: int, proc: ServerProcess) -> None:
        """Kill the server's process group once it uses more than `limit` bytes (the function's memory limit,
        `quantity` as written: memorywatch.py)."""
        if instance.debug is not None:  # the debugger takes memory the pod's server does not have
            handle_output(instance, self.logs, "its memory limit is not held under the debugger", "system")
            return
        if not memorywatch.supported():
            handle_output(instance, self.logs, NO_MEMORY_LIMIT % quantity, "system")
            return

        def exceeded(used: int) -> None:
            self.out_of_memory[proc.pid] = " (out of memory: its processes used %d MiB, above its memory limit %s)" % (
                used >> 20,
                quantity,
            )
            outside = strays.outside_group(proc.pid, proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # as the kernel stops an OOMKilled container: no grace
            except ProcessLookupError:
                pass
            strays.kill(outside)

        self.memory.watch(proc.pid, limit, exceeded)

    def _pump(self, instance: Instance, stream: IO[bytes], name: str, prepared: Prepared) -> None:
        """Runtime output to the log, read in large chunks: a busy function logs a line per request."""
        splitter = LineSplitter(control=CONTROL_PREFIX.encode())  # an overlong line is cut, never held whole
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            for line in splitter.feed(chunk):
                handle_output(instance, self.logs, line, name, prepared.map_paths)
        for line in splitter.flush():
            handle_output(instance, self.logs, line, name, prepared.map_paths)
        stream.close()

    def _watch(self, instance: Instance, proc: ServerProcess, pumps: list[threading.Thread]) -> None:
        code = proc.wait()
        self.memory.forget(proc.pid)
        for pump in pumps:
            pump.join(timeout=2)
        why = self.out_of_memory.pop(proc.pid, "")
        if instance.handle is proc and instance.state != State.STOPPED:
            self.server_exited(instance, code, hint=why)

    def alive(self, instance: Instance) -> bool:
        proc = server_process(instance)
        return proc is not None and proc.poll() is None

    def reload(self, instance: Instance, prepared: Prepared) -> str:
        proc = server_process(instance)
        if prepared.runtime.reload == "signal" and proc is not None and proc.poll() is None:
            if os.path.isdir("/proc"):
                instance.after_reload.append(strays.replaced(proc.pid, proc.pid))
            os.kill(proc.pid, signal.SIGHUP)
            return "signal"
        self.stop(instance)
        self.start(instance, prepared)
        return "restart"

    def stop(self, instance: Instance, grace: float = 3.0) -> None:
        proc, instance.handle = server_process(instance), None
        if proc is None:
            return
        try:
            self._kill(proc, grace)
        finally:
            if self.guardian is not None:
                self.guardian.forget(proc.pid)

    def close(self) -> None:
        self.memory.close()
        with self.templates_lock:
            templates, self.templates = list(self.templates.values()), {}
        for template in templates:
            template.close()

    @staticmethod
    def _kill(proc: ServerProcess, grace: float) -> None:
        if proc.poll() is not None:
            return
        outside = strays.outside_group(proc.pid, proc.pid)  # found now: once the server is gone, they are no one's
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # the server and every worker it forked
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers left in the group after the server exited
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        strays.kill(outside)
