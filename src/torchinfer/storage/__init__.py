"""Object storage: inputs read from, and run folders written to, ``s3://``, ``gs://`` and the
other URIs pyarrow's filesystems open (``uris``), a run folder staged locally and kept in step
with its URI (``mirror``). Credentials come from the environment or the usual config files,
as each filesystem reads them; none are taken from a URI.
"""
