"""htpasswd files as Debian's apache2-utils writes them (`htpasswd -m`, `-B`, `-s`), checked by
kubeless_local/htpasswd.py."""

import subprocess

import pytest

from kubeless_local import htpasswd
from kubeless_local.errors import UserError

FLAGS = [("-m", "apr1-md5"), ("-B", "bcrypt"), ("-s", "sha1")]


@pytest.mark.parametrize(("flag", "scheme"), FLAGS)
def test_a_password_htpasswd_wrote_is_checked(flag, scheme):
    written = subprocess.run(
        ["htpasswd", "-nb", *([flag, "-C", "4"] if flag == "-B" else [flag]), "alice", "s3cr3t:é"],
        capture_output=True,
        check=True,
    ).stdout
    users = htpasswd.Htpasswd.parse(written, "auth")
    assert users.scheme("alice") == scheme
    assert users("alice", "s3cr3t:é")
    assert not users("alice", "s3cr3t")
    assert not users("bob", "s3cr3t:é")


def test_apr1_matches_a_published_vector():
    # `openssl passwd -apr1 -salt saltsalt password`
    assert htpasswd.apr1(b"password", b"saltsalt") == "$apr1$saltsalt$yAAkm4libquA.ZWLHbSBq/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"alice:plain\n", "auth: line 1 is not USER:HASH"),
        (b"# only a comment\n", "auth: no user in it"),
        (b"\xff\xfe", "auth: not UTF-8 text"),
    ],
)
def test_a_malformed_file_is_one_line_naming_it(text, message):
    with pytest.raises(UserError, match=message):
        htpasswd.Htpasswd.parse(text, "auth")
