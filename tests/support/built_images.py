"""Images the docker tests build for themselves: FROM our Python runtime image, labelled as not ours,
running one Python file as the whole server; built without network, tagged kubeless-local-test/NAME:1."""

import io
import tarfile

BASE = "kubeless-local/python:3.11"


def python_server_image(client, name, server):
    """kubeless-local-test/NAME:1, whose CMD runs `server` (Python source) as /server.py."""
    dockerfile = "FROM %s\nLABEL io.kubeless-local.runtime=\nCOPY server.py /server.py\n" % BASE
    dockerfile += 'CMD ["python3", "/server.py"]\n'
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, text in (("Dockerfile", dockerfile), ("server.py", server)):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    tag = "kubeless-local-test/%s:1" % name
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, network_mode="none", rm=True)
    return tag
