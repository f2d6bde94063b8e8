"""Errors and logs name the user's file, never the engine's generated copy
(`.kubeless-local/functions/<name>/gen-N/…`), after any number of saves (issue E)."""

BROKEN_CODE = "this is ( not valid code in any language {{{\n"


def test_a_load_error_after_several_saves_names_the_users_file(function):
    fn = function("hello", editable=True)
    for scenario in ("echo", "hello", "echo"):  # later generations than the one the server started on
        assert fn.replace_code(fn.scenario_code(scenario)).value == "Ready", fn.logs()
    assert fn.replace_code(BROKEN_CODE).value == "CompileError"
    error = fn.instance.error
    assert "/gen-" not in error and "/build-" not in error and "functions/%s/" % fn.spec.name not in error, error
    assert str(fn.spec.source.parent) in error or fn.spec.source.name in error, error
    assert "/gen-" not in fn.logs() and "functions/%s/" % fn.spec.name not in fn.logs(), fn.logs()
