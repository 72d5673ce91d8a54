"""Inputs and run folders on object storage: an S3-compatible server on loopback (moto's
server mode), read and written through pyarrow's filesystems as a real bucket would be. The
credentials come from the environment only, and are never written anywhere."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from torchinfer.datasets import shapes as ds

moto_server = pytest.importorskip("moto.server", reason="moto is not installed (a dev "
                                  "dependency): pip install 'moto[server]'")

SECRET = "s3cr3t-never-written-anywhere"
BUCKET = "photos"


@pytest.fixture(scope="module")
def s3():
    """A bucket on a loopback S3 server; the environment names it for every client (pyarrow,
    boto3, the CLI's subprocesses). Yields a boto3 client."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test-key-id",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        for i in range(5):
            buffer = io.BytesIO()
            ds.generate_single(ds.scene_rng(404, i), 96).image.save(buffer, "PNG")
            client.put_object(Bucket=BUCKET, Key=f"in/{i}.png", Body=buffer.getvalue())
        client.put_object(Bucket=BUCKET, Key="in/notes.md", Body=b"not an image")
        client.put_object(Bucket=BUCKET, Key="in/broken.jpg", Body=b"\xff\xd8 not a jpeg")
        yield client
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The command in a process of its own, with this environment (the bucket's address and
    the credentials)."""
    return subprocess.run([sys.executable, "-m", "torchinfer", *args], capture_output=True,
                          text=True, timeout=300)


def objects(client, prefix: str) -> dict[str, bytes]:
    """The objects under ``prefix``, less the empty ``name/`` markers pyarrow leaves where a
    deleted object's "folder" was (its way of keeping folders on S3)."""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listed if not o["Key"].endswith("/")}


def records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.mark.slow  # 11 s; the two-node job of test_ray_cluster.py reads and writes a bucket by default
def test_a_local_run_reads_and_writes_the_bucket(s3, tmp_path):
    done = run_cli("predict", "classify", f"s3://{BUCKET}/in/", "-m", "shapes_classifier",
                   "--out", f"s3://{BUCKET}/runs/a/", "--backend", "torch", "--quiet",
                   "--allow-failures", "--save-vis")
    assert done.returncode == 0, done.stderr
    written = objects(s3, "runs/a/")
    pictures = {n for n in written if n.startswith("vis/")}
    assert set(written) - pictures == {"run.json", "predictions.jsonl", "summary.json"}
    assert len(pictures) == 5 and all(written[n][:2] == b"\xff\xd8" for n in pictures)
    got = records(written["predictions.jsonl"])
    # the prefix walked as a folder is: images only, sorted; a broken one is its own record
    assert [r["source"] for r in got] == [f"s3://{BUCKET}/in/{n}" for n in
                                          ("0.png", "1.png", "2.png", "3.png", "4.png",
                                           "broken.jpg")]
    assert "error" in got[-1] and all("topk" in r for r in got[:-1])
    summary = json.loads(written["summary.json"])
    assert summary["outputs"]["predictions"] == f"s3://{BUCKET}/runs/a/predictions.jsonl"
    # the same files, downloaded, give the same answers in a plain local run
    local = tmp_path / "in"
    local.mkdir()
    for i in range(5):
        (local / f"{i}.png").write_bytes(objects(s3, f"in/{i}.png")[""])
    run_cli("predict", "classify", str(local), "-m", "shapes_classifier", "--out",
            str(tmp_path / "run"), "--backend", "torch", "--quiet")
    expected = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text()
                .splitlines()]
    assert [r["topk"] for r in got[:-1]] == [r["topk"] for r in expected]
    for name, data in written.items():  # the credentials are nowhere in what was written
        assert SECRET.encode() not in data and b"test-key-id" not in data, name
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.slow  # 17 s: three runs, each a process of its own
def test_resume_from_the_bucket_and_a_list_of_uris(s3):
    listing = "\n".join([f"s3://{BUCKET}/in/0.png", "1.png", f"s3://{BUCKET}/in/missing.png"])
    s3.put_object(Bucket=BUCKET, Key="in/list.txt", Body=listing.encode())
    out = f"s3://{BUCKET}/runs/b"
    first = run_cli("predict", "classify", f"s3://{BUCKET}/in/list.txt", "-m",
                    "shapes_classifier", "--out", out, "--backend", "torch", "--quiet",
                    "--allow-failures")
    assert first.returncode == 0, first.stderr
    got = records(objects(s3, "runs/b/")["predictions.jsonl"])
    assert [r["source"] for r in got] == [f"s3://{BUCKET}/in/0.png", f"s3://{BUCKET}/in/1.png",
                                          f"s3://{BUCKET}/in/missing.png"]
    assert got[2]["error"] == "file not found"
    # the missing object appears; --resume runs it and keeps the two done
    buffer = io.BytesIO()
    ds.generate_single(ds.scene_rng(404, 9), 96).image.save(buffer, "PNG")
    s3.put_object(Bucket=BUCKET, Key="in/missing.png", Body=buffer.getvalue())
    again = run_cli("predict", "classify", f"s3://{BUCKET}/in/list.txt", "-m",
                    "shapes_classifier", "--out", out, "--backend", "torch", "--quiet",
                    "--resume")
    assert again.returncode == 0, again.stderr
    written = objects(s3, "runs/b/")
    assert json.loads(written["summary.json"])["resumed"] == 2
    final = records(written["predictions.jsonl"])
    assert [r["source"] for r in final] == [r["source"] for r in got]
    assert all("topk" in r for r in final)
    assert "predictions.jsonl.partial" not in written  # the finished run's file only
    # --exist-ok replaces the run, and deletes what the new one does not write
    s3.put_object(Bucket=BUCKET, Key="runs/b/vis/old.jpg", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="runs/b/mine.txt", Body=b"kept")
    redo = run_cli("predict", "classify", f"s3://{BUCKET}/in/0.png", "-m", "shapes_classifier",
                   "--out", out, "--backend", "torch", "--quiet", "--exist-ok")
    assert redo.returncode == 0, redo.stderr
    written = objects(s3, "runs/b/")
    assert len(records(written["predictions.jsonl"])) == 1
    assert "mine.txt" in written  # not a run's file: left alone, as in a local folder


def test_credentials_in_a_uri_are_refused(s3):
    """Named on the command line (exit code 2, one line, the secret nowhere), or inside a list
    object on the bucket; a secret may hold a "/" (AWS's may), which URL parsers read as the
    start of the path."""
    from torchinfer.errors import OptionError
    from torchinfer.runner.sources import expand_sources

    slashed = "ab/" + SECRET
    done = run_cli("predict", "classify", f"s3://key:{slashed}@{BUCKET}/in/0.png", "-m",
                   "shapes_classifier", "--out", f"s3://{BUCKET}/runs/c/", "--quiet")
    assert done.returncode == 2, done.stderr
    assert "credentials" in done.stderr and SECRET not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1
    assert objects(s3, "runs/c/") == {}  # refused before anything was written
    s3.put_object(Bucket=BUCKET, Key="in/secret-list.txt",
                  Body=f"0.png\ns3://key:{SECRET}@{BUCKET}/in/1.png\n".encode())
    with pytest.raises(OptionError, match="credentials") as refused:
        list(expand_sources([f"s3://{BUCKET}/in/secret-list.txt"]))
    assert SECRET not in str(refused.value)
    s3.delete_object(Bucket=BUCKET, Key="in/secret-list.txt")  # not in the prefix's walk


def test_what_counts_as_credentials_in_a_uri():
    from torchinfer.errors import OptionError
    from torchinfer.storage.uris import check_no_credentials, redacted

    for uri in ("s3://a:b@bucket/k", "s3://a:b/c@bucket/k", "abfs://c@acct/p?client_secret=x",
                "gs://b/k?X-Goog-Signature=1"):
        with pytest.raises(OptionError, match="credentials"):
            check_no_credentials(uri)
        assert "b@" not in redacted(uri) and "secret=x" not in redacted(uri)
    for uri in ("s3://bucket/photos/a.jpg", "hdfs://user@namenode:8020/p", "file:///tmp/x.png"):
        check_no_credentials(uri)  # a user name alone is not a secret


def test_the_mirror_uploads_whole_lines_and_deletes_what_is_gone(s3, tmp_path):
    from torchinfer.storage.mirror import RemoteFolder

    remote = RemoteFolder(f"s3://{BUCKET}/mirror")
    local = tmp_path / "run"
    (local / "vis").mkdir(parents=True)
    (local / "predictions.jsonl.partial").write_bytes(b'{"a": 1}\n{"b": 2')  # torn last line
    (local / "vis" / "x.jpg").write_bytes(b"picture")
    (local / "vis" / ".x.jpg.1234.tmp").write_bytes(b"half")  # being written: not sent
    assert remote.push(local) == 2
    assert objects(s3, "mirror/") == {"predictions.jsonl.partial": b'{"a": 1}\n',
                                      "vis/x.jpg": b"picture"}
    assert remote.push(local) == 0  # nothing changed
    (local / "vis" / "x.jpg").unlink()
    assert remote.push(local) == 1
    assert set(objects(s3, "mirror/")) == {"predictions.jsonl.partial"}
    again = RemoteFolder(f"s3://{BUCKET}/mirror")
    copy = tmp_path / "copy"
    copy.mkdir()
    assert again.pull(copy) == 1
    assert (copy / "predictions.jsonl.partial").read_bytes() == b'{"a": 1}\n'


@pytest.mark.slow  # 13 s: two runs
def test_an_output_inside_the_inputs_prefix_is_not_read_as_inputs(s3):
    out = f"s3://{BUCKET}/in/run/"  # inside the prefix it reads, pictures and all
    for extra in ((), ("--resume",)):
        done = run_cli("predict", "classify", f"s3://{BUCKET}/in/", "-m", "shapes_classifier",
                       "--out", out, "--backend", "torch", "--quiet", "--allow-failures",
                       "--save-vis", *extra)
        assert done.returncode == 0, done.stderr
        got = records(objects(s3, "in/run/")["predictions.jsonl"])
        assert not [r["source"] for r in got if "/in/run/" in r["source"]]
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": "in/run/" + k} for k in objects(s3, "in/run/")]})
