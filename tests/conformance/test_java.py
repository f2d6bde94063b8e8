"""Java-specific conformance: where the Java runtime differs from the legacy image by design (newlines
kept, compile errors with file:line and the last good code serving, --release 11) and the parity guard
(the java11 image compiles at -source 6 unless the pom sets a language level)."""

import pytest

pytestmark = pytest.mark.language("java")

GUARD_WARNING = "the java11 image builds with -source 6; set maven.compiler.source/target >= 8 in pom.xml"

LAMBDA = """package io.kubeless;

import java.util.function.Supplier;

public class handler {
    public String handler(Event event, Context context) {
        Supplier<String> answer = () -> "lambda";
        return answer.get();
    }
}
"""

DIAMOND = """package io.kubeless;

import java.util.ArrayList;
import java.util.List;

public class handler {
    public String handler(Event event, Context context) {
        List<String> words = new ArrayList<>();
        words.add("diamond");
        return words.get(0);
    }
}
"""

NEWER_API = """package io.kubeless;

public class handler {
    public String handler(Event event, Context context) {
        return "%s".formatted("java 15");
    }
}
"""

BROKEN = """package io.kubeless;

public class handler {
    public String handler(Event event, Context context) {
        return "missing semicolon"
    }
}
"""

LEVEL_8_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <artifactId>function</artifactId>
  <version>1.0-SNAPSHOT</version>
  <parent>
    <groupId>io.kubeless</groupId>
    <artifactId>kubeless</artifactId>
    <version>1.0-SNAPSHOT</version>
  </parent>
  <properties>
    <maven.compiler.source>1.8</maven.compiler.source>
    <maven.compiler.target>1.8</maven.compiler.target>
  </properties>
</project>
"""


def test_body_newlines_are_kept(function):
    # the legacy handler read the body line by line and joined the lines without their newlines
    fn = function("echo")
    response = fn.post("/", data="one\ntwo\n\nthree\n", headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.text) == (200, "one\ntwo\n\nthree\n")


def test_a_compile_error_names_the_file_and_line_and_keeps_the_last_good_code(function):
    fn = function("hello", editable=True)
    assert fn.replace_code(BROKEN).value == "CompileError"
    assert "handler.java:5: error: ';' expected" in fn.instance.error, fn.instance.error
    assert "/gen-" not in fn.instance.error
    assert fn.get("/").text == "hello world"  # the last good generation serves
    assert fn.replace_code(fn.scenario_code("echo")).value == "Ready"
    assert fn.post("/", data="fixed").text == "fixed"


MAX_HEAP = """package io.kubeless;

public class handler {
    public String handler(Event event, Context context) {
        return String.valueOf(Runtime.getRuntime().maxMemory() >> 20);
    }
}
"""


def test_the_heap_is_sized_by_the_memory_limit_as_in_the_pod(function):
    """In the pod's container the JVM sees the limit and sizes its heap by it (half of a limit this small, a
    quarter of a larger one); on the process backend it was sized by this machine's memory (a quarter of 24 GiB
    here), so a function that fills a heap the cluster's JVM would not have (OutOfMemoryError there) ran here,
    until the memory limit stopped it."""
    fn = function("hello", editable=True, memory="256Mi")
    assert fn.replace_code(MAX_HEAP).value == "Ready"
    assert 64 <= int(fn.get("/").text) <= 128  # MiB: half of 256 MiB, less a survivor space (121 here)


def test_apis_newer_than_java_11_do_not_compile(function):
    # javac --release 11, not -source/-target 11: String.formatted (Java 15) would compile, then fail
    # with NoSuchMethodError on the cluster's Java 11
    fn = function("hello", editable=True)
    assert fn.replace_code(NEWER_API).value == "CompileError"
    assert "handler.java:5" in fn.instance.error and "formatted" in fn.instance.error, fn.instance.error


def test_a_lambda_without_a_language_level_is_warned_about(function):
    fn = function("hello", editable=True)
    assert fn.replace_code(LAMBDA).value == "Ready"
    assert fn.get("/").text == "lambda"  # it runs here: a warning, not an error
    logs = fn.wait_for_log(GUARD_WARNING)
    assert GUARD_WARNING in logs, logs
    assert "handler.java:7: needs Java 8 or newer" in logs, logs


def test_java_7_syntax_without_a_language_level_is_warned_about(function):
    # --release 7 accepts the diamond operator; -source 6 (the cluster) refuses it
    fn = function("hello", editable=True)
    assert fn.replace_code(DIAMOND).value == "Ready"
    logs = fn.wait_for_log("diamond operator")
    assert "handler.java:8: diamond operator <> needs Java 7" in logs, logs


def test_a_pom_that_sets_the_language_level_is_not_warned_about(function):
    fn = function("hello", editable=True, deps=LEVEL_8_POM)
    assert fn.replace_code(LAMBDA).value == "Ready"
    assert fn.get("/").text == "lambda"
    assert GUARD_WARNING not in fn.logs()


def test_the_parity_guard_can_be_an_error(function):
    fn = function("hello", editable=True, env={"KUBELESS_LOCAL_JAVA_SOURCE_CHECK": "error"})
    assert fn.replace_code(LAMBDA).value == "CompileError"
    assert "builds with -source 6" in fn.instance.error, fn.instance.error
    assert fn.get("/").text == "hello world"
