"""What a deps install reads besides its deps file (installinputs.py): each tool's references, found in the
laid-out code, copied and hashed; a reference the pod's install would not see is one clear line."""

import json

import pytest

from kubeless_local.emulator import installinputs
from kubeless_local.emulator.installinputs import Missing, find


def lay_out(folder, files):
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def test_a_deps_file_naming_nothing_of_the_function_has_no_inputs(tmp_path):
    lay_out(tmp_path, {"handler.py": "", "requirements.txt": "requests==2.31\n"})
    deps = "requests==2.31\n-i https://example.invalid/simple\ngit+https://example.invalid/x.git#egg=x\n"
    assert find("requirements.txt", deps, tmp_path) == installinputs.Inputs((), "")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("./libs/mylib", ["libs/mylib"]),
        ("libs/mylib", ["libs/mylib"]),
        ("-e ./libs/mylib", ["libs/mylib"]),
        ("--editable=./libs/mylib", ["libs/mylib"]),
        ("./libs/mylib[extra] ; python_version >= '3'", ["libs/mylib"]),
        ("mylib @ file:libs/mylib", ["libs/mylib"]),
        ("wheels/mylib-0.1-py3-none-any.whl", ["wheels/mylib-0.1-py3-none-any.whl"]),
        ("-f ./wheels", ["wheels"]),
        ("--find-links wheels\nmylib", ["wheels"]),
        ("./libs/mylib  # our library", ["libs/mylib"]),
        ("-e .", ["."]),
    ],
)
def test_pip_references_are_the_paths_pip_takes_as_paths(tmp_path, line, expected):
    lay_out(tmp_path, {"libs/mylib/setup.py": "", "wheels/mylib-0.1-py3-none-any.whl": "", "handler.py": ""})
    assert list(find("requirements.txt", line + "\n", tmp_path).paths) == expected


def test_pip_requirement_files_are_read_relative_to_the_file_that_names_them(tmp_path):
    lay_out(
        tmp_path,
        {
            "reqs/base.txt": "-c constraints.txt\n./libs/a\n",  # a requirement's path: from the working folder
            "reqs/constraints.txt": "requests<3\n",
            "libs/a/setup.py": "",
            "libs/b/setup.py": "",
        },
    )
    inputs = find("requirements.txt", "-r reqs/base.txt\n./libs/b\n", tmp_path)
    assert inputs.paths == ("libs/a", "libs/b", "reqs/base.txt", "reqs/constraints.txt")


def test_npm_references_are_file_link_and_path_versions(tmp_path):
    lay_out(tmp_path, {"libs/a/package.json": "{}", "libs/b/package.json": "{}", "vendor/c.tgz": ""})
    manifest = {
        "dependencies": {"a": "file:./libs/a", "b": "../fn/libs/b", "gh": "user/repo", "d": "^1.0.0"},
        "optionalDependencies": {"c": "file:vendor/c.tgz"},
    }
    (tmp_path.parent / "fn").symlink_to(tmp_path)  # ../fn/libs/b: back into the function's folder
    inputs = find("package.json", json.dumps(manifest), tmp_path)
    assert inputs.paths == ("libs/a", "libs/b", "vendor/c.tgz")


def test_lock_files_beside_the_deps_file_are_inputs(tmp_path):
    lay_out(tmp_path, {"package-lock.json": "{}", "Gemfile.lock": "", "composer.lock": "{}"})
    assert find("package.json", '{"dependencies": {"ms": "^2"}}', tmp_path).paths == ("package-lock.json",)
    assert find("Gemfile", 'gem "rack"\n', tmp_path).paths == ("Gemfile.lock",)
    assert find("composer.json", "{}", tmp_path).paths == ("composer.lock",)
    assert find("requirements.txt", "rack\n", tmp_path).paths == ()


def test_gemfile_references(tmp_path):
    lay_out(tmp_path, {"libs/a/a.gemspec": "", "libs/b/b.gemspec": "", "extra.rb": "", "libs/c/c.gemspec": ""})
    gemfile = (
        'source "https://rubygems.org"\n'
        'gem "a", path: "libs/a"\n'
        "gem 'b', :path => './libs/b'\n"
        '# gem "z", path: "nowhere"\n'
        'path "libs/c" do\n  gem "c"\nend\n'
        'eval_gemfile "extra.rb"\n'
    )
    assert find("Gemfile", gemfile, tmp_path).paths == ("extra.rb", "libs/a", "libs/b", "libs/c")
    assert find("Gemfile", "gemspec\n", tmp_path).paths == (".",)
    assert find("Gemfile", 'gemspec path: "libs/a"\n', tmp_path).paths == ("libs/a",)


def test_composer_path_and_artifact_repositories(tmp_path):
    lay_out(tmp_path, {"packages/a/composer.json": "{}", "packages/b/composer.json": "{}", "artifacts/x.zip": ""})
    manifest = {
        "repositories": [
            {"type": "path", "url": "packages/*"},
            {"type": "artifact", "url": "artifacts"},
            {"type": "vcs", "url": "https://example.invalid/x.git"},
        ]
    }
    inputs = find("composer.json", json.dumps(manifest), tmp_path)
    assert inputs.paths == ("artifacts", "packages/a", "packages/b")


def test_a_reference_outside_the_functions_files_says_so(tmp_path):
    (tmp_path / "fn").mkdir()
    lay_out(tmp_path, {"shared/lib/setup.py": ""})
    with pytest.raises(Missing, match=r"^requirements.txt names \.\./shared/lib, outside the function's files"):
        find("requirements.txt", "../shared/lib\n", tmp_path / "fn")


def test_a_reference_not_among_the_functions_files_names_the_fix(tmp_path):
    source = lay_out(tmp_path, {"src/handler.js": ""}) / "src" / "handler.js"
    code = tmp_path / "gen-1"
    code.mkdir()
    with pytest.raises(Missing) as raised:
        find("package.json", '{"dependencies": {"a": "file:./libs/a"}}', code, source)
    assert str(raised.value) == (
        "package.json names file:./libs/a, which is not among the function's files (in the pod its install sees"
        " only them, in /kubeless); the function's source is the file handler.js alone: make its folder the"
        " source (`run FOLDER`, the local.kubeless.io/source annotation)"
    )


def test_the_digest_follows_the_bytes_of_the_inputs_and_they_are_copied_as_laid_out(tmp_path):
    code = lay_out(tmp_path / "code", {"libs/a/a.py": "A = 1\n", "libs/a/sub/b.py": "B = 2\n", "handler.py": ""})
    first = find("requirements.txt", "./libs/a\n", code)
    assert find("requirements.txt", "./libs/a\n", code) == first
    (code / "handler.py").write_text("changed = True\n")  # not an input
    assert find("requirements.txt", "./libs/a\n", code) == first
    (code / "libs/a/sub/b.py").write_text("B = 3\n")
    second = find("requirements.txt", "./libs/a\n", code)
    assert second.digest not in ("", first.digest)
    target = tmp_path / "deps"
    target.mkdir()
    second.copy_into(code, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "libs/a/a.py",
        "libs/a/sub/b.py",
    ]
    assert (target / "libs/a/sub/b.py").read_text() == "B = 3\n"


def test_composer_autoload_of_the_functions_own_folders_and_files_that_are_there(tmp_path):
    lay_out(tmp_path, {"src/A.php": "", "lib/B.php": "", "helpers.php": "", "tests/T.php": "", "legacy/C.php": ""})
    manifest = {
        "autoload": {
            "psr-4": {"App\\": "src/", "Lib\\": ["lib/", "missing/"]},
            "psr-0": {"Legacy_": "legacy/"},
            "files": ["helpers.php"],
        },
        "autoload-dev": {"classmap": ["tests/"]},
    }
    inputs = find("composer.json", json.dumps(manifest), tmp_path)
    assert inputs.paths == ("helpers.php", "legacy", "lib", "src", "tests")  # missing/: composer skips it too


def test_npm_workspaces_are_inputs(tmp_path):
    lay_out(tmp_path, {"packages/a/package.json": "{}", "packages/b/package.json": "{}", "tools/c/package.json": "{}"})
    manifest = {"workspaces": ["packages/*", "tools/c"], "dependencies": {"a": "*"}}
    assert find("package.json", json.dumps(manifest), tmp_path).paths == ("packages/a", "packages/b", "tools/c")
    yarn = {"workspaces": {"packages": ["packages/a"]}}
    assert find("package.json", json.dumps(yarn), tmp_path).paths == ("packages/a",)
