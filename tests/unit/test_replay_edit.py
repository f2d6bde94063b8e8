"""`replay --edit`: the request as the user leaves it in $EDITOR; an editor that cannot run is the user's to fix."""

import pytest

from kubeless_local.commands import history
from kubeless_local.errors import UserError


@pytest.mark.parametrize("editor, said", [("no-such-editor-kl", "No such file"), ("false", "Editing failed")])
def test_an_editor_that_cannot_run_or_fails_is_one_line_with_the_fix(monkeypatch, editor, said):
    # click's ClickException went out as `Error: …` with exit code 1 and no word of what to do
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", editor)
    with pytest.raises(UserError, match="%s.*; replay not sent: set EDITOR \\(or VISUAL\\)" % said):
        history.edited_request({"method": "GET", "path": "/"})


def test_the_request_as_the_editor_left_it(monkeypatch, tmp_path):
    script = tmp_path / "edit.py"
    script.write_text(
        "import json, sys\npath = sys.argv[1]\nrequest = json.load(open(path))\nrequest['path'] = '/edited'\n"
        "json.dump(request, open(path, 'w'))\n"
    )
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", "python3 %s" % script)
    assert history.edited_request({"method": "GET", "path": "/"}) == {"method": "GET", "path": "/edited"}
