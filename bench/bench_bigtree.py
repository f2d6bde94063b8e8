"""Unrelated files do not slow reload: save → first answer of the new code in a project whose function
folder holds a 30,000-file node_modules, against the same project without it (target: ≤ 1.2×).
Through the real `dev` path (manifest loading, watcher, fingerprints, prepare, reload).

`--tree lib` names the big folder `lib` instead: code the function ships (vendored packages), so it
is laid out in every generation; a save costs a walk of it plus one hard link per unchanged file
(issue J.5: it cost a full copy).

    python bench/bench_bigtree.py [--runtimes python3.11,...] [--edits 20] [--files 30000] [--tree node_modules]
"""

import time

from common import CATALOG, FUNCTION_NAMES, MARKED_HELLO, Engine, answer, bench_parser, summary

from kubeless_local.emulator.project import Project

MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations: {local.kubeless.io/source: fn}
spec: {runtime: %s, handler: handler.%s}
"""


def make_tree(folder, files, per_folder=10):
    """node_modules as npm leaves it: many small packages, a few files each."""
    for index in range(files):
        package = folder / ("pkg-%d" % (index // per_folder)) / "lib"
        if index % per_folder == 0:
            package.mkdir(parents=True)
        (package / ("f%d.js" % index)).write_text("module.exports = %d;\n" % index)


def measure(engine, runtime, files, edits, tree="node_modules"):
    """(start seconds, save→answer times in ms, inotify watches) for one project."""
    root = engine.tmp / ("project-%d" % files)
    source = root / "fn" / ("handler" + runtime.suffix)
    source.parent.mkdir(parents=True)
    source.write_text(MARKED_HELLO[runtime.server].replace("MARK", "v0"))
    (root / "function.yaml").write_text(MANIFEST % (runtime.name, FUNCTION_NAMES.get(runtime.id, "handler")))
    if files:
        make_tree(root / "fn" / tree, files)
    project = Project(root, engine.supervisor)
    try:
        started = time.monotonic()
        project.start()
        project.watch()
        start_seconds = time.monotonic() - started
        url = engine.supervisor.instances["hello"].url + "/"
        times = []
        for edit in range(1, edits + 1):
            marker = "v%d" % edit
            time.sleep(0.3)  # let the previous reload settle, as between a developer's saves
            started = time.monotonic()
            source.write_text(MARKED_HELLO[runtime.server].replace("MARK", marker))
            while answer(url)[1] != marker:
                if time.monotonic() - started > 30:
                    raise RuntimeError("%s: edit %d never answered" % (runtime.name, edit))
                time.sleep(0.002)
            times.append((time.monotonic() - started) * 1000)
        return start_seconds, times, len(project.watches)
    finally:
        project.stop()


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--files", type=int, default=30000)
    parser.add_argument("--tree", default="node_modules", help="the big folder's name (lib: code the function ships)")
    args = parser.parse_args()
    print("| runtime | backend | %s files | start s | watches | save→answer median ms | p95 ms |" % args.tree)
    print("|---|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime, _ = CATALOG.resolve(name)
        medians = []
        for files in (0, args.files):
            engine = Engine(args.backend)
            try:
                start_seconds, times, watches = measure(engine, runtime, files, args.edits, args.tree)
            finally:
                engine.close()
            s = summary(times)
            medians.append(s["median"])
            print(
                "| %s | %s | %d | %.2f | %d | %.0f | %.0f |"
                % (runtime.name, args.backend, files, start_seconds, watches, s["median"], s["p95"]),
                flush=True,
            )
        print("| %s | | ratio | | | %.2f× | |" % (runtime.name, medians[1] / medians[0]), flush=True)


if __name__ == "__main__":
    main()
