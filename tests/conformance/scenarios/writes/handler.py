import os


def handler(event, context):
    """Appends the body to data.txt (a file of its code) and to notes/log.txt (a folder it makes), in its working
    folder (/kubeless, an emptyDir the pod may write to); returns both."""
    os.makedirs("notes", exist_ok=True)
    for path in ("data.txt", "notes/log.txt"):
        with open(path, "ab") as f:
            f.write(event["data"])
    with open("data.txt") as data, open("notes/log.txt") as log:
        return data.read().replace("\n", "") + "|" + log.read()
