"""Hot reload: file write → first response from the new code, through the real `dev` path
(watchdog → prepare → reload), over N edits.

    python bench/bench_reload.py [--runtimes python3.11,...] [--edits 20]
"""

from common import CATALOG, Engine, bench_parser, summary

from kubeless_local import spec as specs
from kubeless_local.emulator.project import Project


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--edits", type=int, default=20)
    args = parser.parse_args()
    print("| runtime | backend | edits | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime, _ = CATALOG.resolve(name)
        engine = Engine(args.backend)
        fn = engine.marked_spec(runtime, "hello", "v0")
        project = Project(fn.source.parent, engine.supervisor, specs.Manifests(functions=[fn]))
        try:
            project.start()
            project.watch()
            url = engine.supervisor.instances["hello"].url + "/"
            times = engine.edit_times(fn, runtime, url, args.edits, timeout=30)
            s = summary(times)
            print(
                "| %s | %s | %d | %.0f | %.0f | %.0f |"
                % (runtime.name, args.backend, args.edits, s["median"], s["p95"], s["max"]),
                flush=True,
            )
        finally:
            project.stop()
            engine.close()


if __name__ == "__main__":
    main()
