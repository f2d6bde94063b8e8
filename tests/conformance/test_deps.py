"""A function's deps file is installed whole into its deps folder, whatever the installing interpreter
already has (issue J.1): the function runs isolated from the machine's packages, as in the pod. And the install
sees what it sees in the pod's /kubeless: the function's own libraries its deps file names, the lock file beside it."""

import importlib.util
import json
import shutil
import uuid
from pathlib import Path

import pytest

# Their closure overlaps what this machine's Python has (requests, typing_extensions) and the image's
# (decorator).
PYTHON_DEPS = "requests\nbeautifulsoup4\ndecorator\n"


@pytest.mark.language("python")
def test_python_deps_the_installing_interpreter_already_has_are_installed(function):
    # The case of the bug: the installing Python has them (kubeless-local itself needs requests, and
    # typing_extensions through aiokafka and kubernetes).
    for name in ("requests", "typing_extensions"):
        assert importlib.util.find_spec(name) is not None, "this test needs %s in the host's Python" % name
    fn = function("deps", deps=PYTHON_DEPS)
    response = fn.get("/")
    assert response.status_code == 200, fn.logs()
    deps = fn.supervisor.serving[fn.instance.name].placeholders["deps"]
    for module, path in response.json().items():
        assert path.startswith(deps + "/"), "%s: imported from %s, not from %s" % (module, path, deps)


@pytest.mark.language("python")
@pytest.mark.backend("process")  # the machine's Python installs there; in an image, the image's own
def test_python_deps_install_says_nothing_of_the_installing_pythons_own_conflicts(function, tmp_path, monkeypatch):
    """Packages of the installing Python that conflict with the deps or with each other (common on a
    developer's machine) made pip print `ERROR: pip's dependency resolver … incompatible` in the install's
    output, which reads as a failed install: the function never sees them (it runs with -S)."""
    installed = tmp_path / "machine" / "needs_old_requests-1.0.dist-info"  # as pip records an installed package
    installed.mkdir(parents=True)
    (installed / "METADATA").write_text("Metadata-Version: 2.1\nName: needs-old-requests\nVersion: 1.0\n"
                                        "Requires-Dist: requests<1.0\n")  # fmt: skip
    (installed / "RECORD").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(installed.parent))  # seen by the install step's pip (process backend)
    fn = function("deps", deps=PYTHON_DEPS + "# %s: a deps file of its own, so it is installed\n" % uuid.uuid4())
    try:
        assert fn.get("/").status_code == 200, fn.logs()
        assert "Successfully installed" in fn.logs()  # the install ran and its output is shown
        assert "incompatible" not in fn.logs() and "dependency conflicts" not in fn.logs(), fn.logs()
    finally:  # the cached install of a deps file no other test has, and its lock
        installed_deps = Path(fn.supervisor.serving[fn.instance.name].placeholders["deps"])
        shutil.rmtree(installed_deps)
        installed_deps.with_name(installed_deps.name + ".lock").unlink(missing_ok=True)


@pytest.mark.language("python")
@pytest.mark.backend("process")  # the machine's pip installs there; in an image, the image's own
@pytest.mark.parametrize("where", ["env", "pip.conf"])
def test_python_deps_install_whatever_the_users_pip_settings(function, tmp_path, monkeypatch, where):
    """A developer's pip that requires a virtualenv or installs with --user (PIP_REQUIRE_VIRTUALENV, PIP_USER, or
    the same in pip.conf: common advice) refused every install (`Could not find an activated virtualenv`, `Can not
    combine '--user' and '--prefix'`): the pod's pip has neither."""
    if where == "env":
        monkeypatch.setenv("PIP_REQUIRE_VIRTUALENV", "1")
        monkeypatch.setenv("PIP_USER", "1")
    else:
        config = tmp_path / "pip.conf"
        config.write_text("[global]\nrequire-virtualenv = true\n\n[install]\nuser = true\n")
        monkeypatch.setenv("PIP_CONFIG_FILE", str(config))  # read with this machine's own files, last
    fn = function("deps", deps=PYTHON_DEPS + "# %s: a deps file of its own, so it is installed\n" % uuid.uuid4())
    try:
        assert fn.get("/").status_code == 200, fn.logs()
        assert "Successfully installed" in fn.logs()
    finally:  # the cached install of a deps file no other test has, and its lock
        installed_deps = Path(fn.supervisor.serving[fn.instance.name].placeholders["deps"])
        shutil.rmtree(installed_deps)
        installed_deps.with_name(installed_deps.name + ".lock").unlink(missing_ok=True)


# A library in the function's folder that its deps file names, as in the pod, where the install runs in
# /kubeless beside the function's files: {language: (deps file, the library's files; {words} its answer)}.
LOCAL_LIBRARY = {
    "python": (
        "./libs/greeting\n",
        {
            "libs/greeting/pyproject.toml": '[project]\nname = "greeting"\nversion = "0.1"\n'
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n',
            "libs/greeting/greeting/__init__.py": 'WORDS = "{words}"\n',
        },
    ),
    "nodejs": (
        '{"name": "fn", "version": "1.0.0", "dependencies": {"greeting": "file:./libs/greeting"}}\n',
        {
            "libs/greeting/package.json": '{"name": "greeting", "version": "1.0.0", "main": "index.js"}\n',
            "libs/greeting/index.js": 'exports.WORDS = "{words}";\n',
        },
    ),
    "ruby": (
        'source "https://rubygems.org"\ngem "greeting", path: "libs/greeting"\n',
        {
            "libs/greeting/greeting.gemspec": "Gem::Specification.new do |s|\n  s.name = 'greeting'\n"
            "  s.version = '0.1.0'\n  s.summary = 'x'\n  s.authors = ['x']\n  s.files = ['lib/greeting.rb']\nend\n",
            "libs/greeting/lib/greeting.rb": 'module Greeting\n  WORDS = "{words}"\nend\n',
        },
    ),
    "php": (
        '{"require": {"local/greeting": "1.0.0"}, "repositories": [{"type": "path", "url": "libs/greeting"},'
        ' {"packagist.org": false}]}\n',
        {
            "libs/greeting/composer.json": '{"name": "local/greeting", "version": "1.0.0",'
            ' "autoload": {"psr-4": {"Greeting\\\\": "src/"}}}\n',
            "libs/greeting/src/Words.php": '<?php\nnamespace Greeting;\n\nclass Words\n{\n    const TEXT = "{words}";\n}\n',
        },
    ),
}


@pytest.mark.language("python", "nodejs", "ruby", "php")
def test_a_library_in_the_functions_folder_named_by_its_deps_file_is_installed(function, runtime):
    """A deps file naming a library of the function's folder (`./libs/greeting`) was installed in a folder
    holding the deps file alone: pip said the path does not exist, npm linked a folder that was not there.
    And a save of the library installs it again, as a new deploy would."""
    deps, library = LOCAL_LIBRARY[runtime.server]
    files = {rel: text.replace("{words}", "greeting v1") for rel, text in library.items()}
    fn = function("localdeps", folder=True, deps=deps, files=files)
    assert (fn.get("/").status_code, fn.get("/").text) == (200, "greeting v1"), fn.logs()
    changed = next(rel for rel in library if "{words}" in library[rel])
    assert (
        fn.replace_file(fn.spec.source / changed, library[changed].replace("{words}", "greeting v2")).value == "Ready"
    )
    assert fn.get("/").text == "greeting v2", fn.logs()


# ms 2.0.0 where package.json alone would install the newest 2.x
PINNED = {
    "name": "fn",
    "version": "1.0.0",
    "lockfileVersion": 3,
    "requires": True,
    "packages": {
        "": {"name": "fn", "version": "1.0.0", "dependencies": {"ms": "^2.0.0"}},
        "node_modules/ms": {
            "version": "2.0.0",
            "integrity": "sha512-Tpp60P6IUJDTuOq/5Z8cdskzJujfwqfOTkrwIwj7IRISpnkJnT6SyJ4PCPnGMoFjC9ddhal5KVIYtAt97ix05A==",
        },
    },
}


@pytest.mark.language("nodejs")
def test_the_package_lock_beside_package_json_pins_the_versions(function):
    """npm in the pod reads the package-lock.json beside package.json in /kubeless; the install here saw
    package.json alone and took the newest versions it allows."""
    deps = '{"name": "fn", "version": "1.0.0", "dependencies": {"ms": "^2.0.0"}}\n'
    fn = function("localdeps", folder=True, deps=deps, files={"package-lock.json": json.dumps(PINNED, indent=2)})
    assert (fn.get("/").status_code, fn.get("/").text) == (200, "2.0.0"), fn.logs()


@pytest.mark.language("php")
def test_the_functions_own_classes_autoloaded_by_composer_json(function):
    """composer.json's `autoload` of the function's own src/ (PSR-4): in the pod composer's autoloader finds
    /kubeless/src beside /kubeless/vendor; the install here saw composer.json alone (`Class not found`). A
    save of a class is served."""
    deps = '{"autoload": {"psr-4": {"Greeting\\\\": "src/"}}}\n'
    words = '<?php\nnamespace Greeting;\n\nclass Words\n{\n    const TEXT = "%s";\n}\n'
    fn = function("localdeps", folder=True, deps=deps, files={"src/Words.php": words % "greeting v1"})
    assert (fn.get("/").status_code, fn.get("/").text) == (200, "greeting v1"), fn.logs()
    assert fn.replace_file(fn.spec.source / "src" / "Words.php", words % "greeting v2").value == "Ready"
    assert fn.get("/").text == "greeting v2"
