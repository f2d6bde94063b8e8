def handler(event, context):
    """Python-only scenario: form fields and uploaded files through the bottle request."""
    request = event["extensions"]["request"]
    upload = request.files.get("f")
    content = upload.file.read().decode() if upload is not None else ""
    return "%s|%s|%s" % (request.forms.get("a"), upload.raw_filename if upload is not None else None, content)
