"""download.py and split_data.py --download, against an HTTP server on 127.0.0.1 that the tests start."""
import hashlib
import io
import os
import shlex
import socket
import tarfile
import time
from pathlib import Path

import pytest

import download as download_module
import split_data
from download import download, safe_extract
from image_factory import write_class_tree
from utils import UserError


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def test_download_keeps_a_file_only_when_whole_and_checked(served, tmp_path):
    folder, url = served
    payload = bytes(range(256)) * 4000
    (folder / "blob.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "got" / "blob.bin"
    assert download(f"{url}/blob.bin", dest, sha256=digest) == digest
    assert dest.read_bytes() == payload
    assert dest.stat().st_mode & 0o777 == 0o666 & ~download_module.current_umask()  # not mkstemp's owner-only
    dest.unlink()
    with pytest.raises(UserError, match="does not have the expected SHA-256"):
        download(f"{url}/blob.bin", dest, sha256="0" * 64)
    assert not dest.exists() and leftovers(dest.parent) == []
    with pytest.raises(UserError, match="stopped after 1,024,000 of 2,048,000 bytes"):
        download(f"{url}/short/blob.bin", dest)
    assert not dest.exists() and leftovers(dest.parent) == []
    # cut short by a server that sent no length: only the digest tells, and its line says to try again before
    # trusting what came (it offered to trust the broken file)
    with pytest.raises(UserError, match=r"so it was not kept: try again \(this server sent no length, so one cut "
                                        r"short ends so too\)\. If the same digest comes again and you trust"):
        download(f"{url}/unsized/blob.bin", dest, sha256=digest)
    assert not dest.exists() and leftovers(dest.parent) == []
    # a length past reading is no length: the file kept by its digest (it blamed the address)
    assert download(f"{url}/garbled/blob.bin", dest, sha256=digest) == digest and dest.read_bytes() == payload


def test_download_failures_are_explained(served, tmp_path):
    _, url = served
    with pytest.raises(UserError, match="could not download .*404"):
        download(f"{url}/missing.tgz", tmp_path / "missing.tgz")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(UserError, match="could not download"):
        download(f"http://127.0.0.1:{port}/x.tgz", tmp_path / "x.tgz")
    for no_url in ("/somewhere/flower_photos.tgz", "flower_photos.tgz"):  # a file at hand, typed as --url
        with pytest.raises(UserError, match=r"an http:// or https:// address is needed. To use a file you have, "
                                            r"put it at .*x.tgz$"):
            download(no_url, tmp_path / "x.tgz")
    with pytest.raises(UserError, match=r"put it at .*wanted.tgz$"):  # where the caller wants it, not a staging name
        download("flower_photos.tgz", tmp_path / "x.tgz.staged", wanted_at=tmp_path / "wanted.tgz")
    # a mistyped scheme ("unknown url type: htp. Check the network") and file://, which docs/data.md does not offer
    for not_web in ("htp://example.org/x.tgz", f"file://{tmp_path}/x.tgz"):
        with pytest.raises(UserError, match=r"^cannot download \S+: an http:// or https:// address is needed"):
            download(not_web, tmp_path / "x.tgz")
    assert leftovers(tmp_path) == []


def test_what_the_disk_refuses_is_said_as_the_disks(served, tmp_path, monkeypatch):
    """A server's 404 is not the network's fault; a full disk, or a folder that cannot be written, is not the
    network's nor the archive's: said so, with what to do, and a whole archive is kept (deleting it cost another
    218 MiB download)."""
    import errno
    import tempfile
    folder, url = served
    with pytest.raises(UserError, match=r"could not download .*/missing.tgz: the server answered 404 [^(]* \(the "
                                        r"address is wrong, has moved, or the server failed\)"):
        download(f"{url}/missing.tgz", tmp_path / "missing.tgz")
    digest = flower_archive(folder, tmp_path / "made")

    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    with monkeypatch.context() as patched:
        patched.setattr(tempfile, "mkstemp", refused)
        with pytest.raises(UserError, match=r"^cannot write flower_photos.tgz into .*ro: Read-only file system. Run "
                                            r"from a folder you can write to"):
            download_module.fetch_flower_photos(tmp_path / "ro" / "flower_photos", f"{url}/flower_photos.tgz", digest)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as patched:
        patched.setattr(tarfile.TarFile, "extractall", full)
        with pytest.raises(UserError, match=r"cannot extract .*flower_photos.tgz into .*full: No space left on device. "
                                            r".*flower_photos.tgz is whole and kept: free some space"):
            download_module.fetch_flower_photos(tmp_path / "full" / "flower_photos", f"{url}/flower_photos.tgz",
                                                digest)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["flower_photos.tgz"]
    (tmp_path / "full" / "flower_photos").mkdir()  # an empty folder (made by hand, by a tool): fetched into
    download_module.fetch_flower_photos(tmp_path / "full" / "flower_photos", f"{url}/flower_photos.tgz", digest)
    assert sorted(p.name for p in (tmp_path / "full" / "flower_photos").iterdir()) == ["LICENSE.txt", "daisy", "tulips"]

def tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """A .tar.gz holding one harmless file and then `member`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        harmless = tarfile.TarInfo("flower_photos/daisy/ok.txt")
        harmless.size = 2
        tar.addfile(harmless, io.BytesIO(b"ok"))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buffer.getvalue()


def crafted(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, linkname, 4 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("member, problem", [
    (crafted("../escaped.txt"), "outside"),
    (crafted("flower_photos/../../escaped.txt"), "outside"),
    (crafted("/tmp/escaped_absolute.txt"), "outside"),
    (crafted("flower_photos/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (crafted("flower_photos/hard", tarfile.LNKTYPE, "flower_photos/daisy/ok.txt"), "is a link"),
    (crafted("flower_photos/null", tarfile.CHRTYPE), "device"),
    (crafted("flower_photos/disk", tarfile.BLKTYPE), "device"),
    (crafted("flower_photos/pipe", tarfile.FIFOTYPE), "FIFO"),
])
def test_safe_extract_refuses_a_crafted_archive_whole(tmp_path, member, problem):
    archive = tmp_path / "evil.tgz"
    archive.write_bytes(tar_with(member, b"evil"))
    with pytest.raises(UserError, match=problem):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()  # refused before anything was written
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/escaped_absolute.txt").exists()


def test_safe_extract_extracts_an_ordinary_archive(tmp_path):
    archive = tmp_path / "fine.tgz"
    archive.write_bytes(tar_with(crafted("flower_photos/roses/a.txt"), b"rose"))
    safe_extract(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "flower_photos" / "roses" / "a.txt").read_bytes() == b"rose"
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 a zip, say")
    with pytest.raises(UserError, match=r"^cannot extract .*bad.zip: it is no tar archive .*, or a damaged one$"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "dest2")  # one line, not one per compression tried


def test_a_flat_archives_folder_is_readable_as_any_folder(served, tmp_path):
    """An archive of class folders with no folder above them becomes data_path itself: the extraction's
    folder, made by mkdtemp for its owner alone, gets the permissions of any folder made here."""
    folder, url = served
    write_class_tree(tmp_path / "made", {"daisy": 1, "roses": 1})
    with tarfile.open(folder / "flat.tgz", "w:gz") as tar:
        for name in ("daisy", "roses"):
            tar.add(tmp_path / "made" / name, arcname=name)
    digest = hashlib.sha256((folder / "flat.tgz").read_bytes()).hexdigest()
    download_module.fetch_flower_photos(tmp_path / "photos", f"{url}/flat.tgz", digest)
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["daisy", "roses"]
    assert (tmp_path / "photos").stat().st_mode & 0o777 == 0o777 & ~download_module.current_umask()


def test_what_a_download_cannot_use_is_said_with_how_to_go_on(served, tmp_path):
    """An address that is no address (a traceback, from urllib); an archive whose digest is right but that holds
    no folders (its empty data folder was then trusted by every run after) or does not extract (kept, and failing
    the same way at every run: said to remove it); a URL named as the data folder (the archive was written where
    the folder goes); what a killed download or extraction left beside it (an hour old) is removed."""
    folder, url = served
    with pytest.raises(UserError, match=r"^--url http://\[::1 is not a valid address: "):
        download_module.fetch_flower_photos(tmp_path / "a" / "flower_photos", "http://[::1", "00" * 32)
    with tarfile.open(folder / "empty.tgz", "w:gz"):
        pass
    digest = hashlib.sha256((folder / "empty.tgz").read_bytes()).hexdigest()
    with pytest.raises(UserError, match=r"empty.tgz holds no folders, so no class folders for .*flower_photos: it "
                                        r"is not the archive meant; remove it and check --url$"):
        download_module.fetch_flower_photos(tmp_path / "b" / "flower_photos", f"{url}/empty.tgz", digest)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["empty.tgz"]  # no data folder left to trust
    (folder / "broken.tgz").write_bytes(b"not an archive")
    digest = hashlib.sha256(b"not an archive").hexdigest()
    with pytest.raises(UserError, match=r"cannot extract .*broken.tgz: .*\. Remove .*broken.tgz to download it "
                                        r"again$"):
        download_module.fetch_flower_photos(tmp_path / "c" / "flower_photos", f"{url}/broken.tgz", digest)
    digest = flower_archive(folder, tmp_path / "made")
    (folder / "flower_photos.tgz").rename(folder / "flower_photos")
    place = tmp_path / "d"
    place.mkdir()
    (place / ".flower_photos.tgz.abc123.part").write_bytes(b"x" * 100)
    (place / ".extracting-xyz").mkdir()
    for left in place.iterdir():
        os.utime(left, (time.time() - 7200,) * 2)
    download_module.fetch_flower_photos(place / "flower_photos", f"{url}/flower_photos", digest)
    assert sorted(p.name for p in place.iterdir()) == ["flower_photos", "flower_photos.tgz"]
    assert sorted(p.name for p in (place / "flower_photos").iterdir()) == ["LICENSE.txt", "daisy", "tulips"]

def flower_archive(folder: Path, work: Path) -> str:
    """flower_photos.tgz laid out like the real one (class folders and LICENSE.txt); returns its SHA-256."""
    write_class_tree(work / "flower_photos", {"daisy": 4, "tulips": 3})
    (work / "flower_photos" / "LICENSE.txt").write_text("CC-BY 2.0\n")
    with tarfile.open(folder / "flower_photos.tgz", "w:gz") as tar:
        tar.add(work / "flower_photos", arcname="flower_photos")
    return hashlib.sha256((folder / "flower_photos.tgz").read_bytes()).hexdigest()


def test_split_data_download_fetches_checks_extracts_and_splits(served, tmp_path):
    folder, url = served
    digest = flower_archive(folder, tmp_path / "made")
    place = tmp_path / "project"
    args = ["--download", "--url", f"{url}/flower_photos.tgz", "--data-path", str(place / "flower_photos"),
            "--out", str(place / "data")]
    with pytest.raises(UserError, match="expected SHA-256"):
        split_data.main([*args, "--sha256", "ab" * 32])
    assert sorted(p.name for p in place.iterdir()) == []  # no archive, no partial file, no folder
    # an archive already there with another digest: taken on its digest, as one downloaded would be
    (place / "flower_photos.tgz").write_bytes((folder / "flower_photos.tgz").read_bytes())
    with pytest.raises(UserError, match=r"flower_photos.tgz is already there but its SHA-256 is [0-9a-f]{64}, not "
                                        r"(ab){32}: move it away .*, or, if you trust it, pass its digest with "
                                        r"--sha256"):
        split_data.main([*args, "--sha256", "ab" * 32])
    (place / "flower_photos.tgz").unlink()
    split_data.main([*args, "--sha256", digest])
    assert sorted(p.name for p in place.iterdir()) == ["data", "flower_photos", "flower_photos.tgz"]
    assert sorted(p.name for p in (place / "flower_photos").iterdir()) == ["LICENSE.txt", "daisy", "tulips"]
    assert len(list((place / "data").glob("*/*/*.jpg"))) == 7
    # run again: the folder is there, nothing is fetched (the server may be gone)
    split_data.main([*args[:1], "--url", "http://127.0.0.1:9/gone.tgz", *args[3:], "--sha256", digest])


def test_official_weights_are_fetched_checked_and_named(served, tmp_path):
    import torch
    from download import fetch_official_weights
    folder, url = served
    (folder / "v1.0.0").mkdir()
    torch.save({"model": {"head.weight": torch.ones(2, 3)}}, folder / "v1.0.0" / "swin_tiny_patch4_window7_224.pth")
    # what downloads killed outright (kill -9) left, hidden: removed when old, kept while another may be writing
    (tmp_path / "weights").mkdir()
    old = [".swin_tiny_patch4_window7_224.pth.host-1.download",
           "..swin_tiny_patch4_window7_224.pth.host-2.download.x1.part"]
    for name in [*old, "..swin_tiny_patch4_window7_224.pth.host-3.download.x2.part"]:
        (tmp_path / "weights" / name).write_bytes(b"x" * 100)
    for name in old:
        os.utime(tmp_path / "weights" / name, (time.time() - 7200,) * 2)
    got = fetch_official_weights("swin_tiny_patch4_window7_224", tmp_path / "weights", base_url=url)
    assert got == tmp_path / "weights" / "swin_tiny_patch4_window7_224.pth"
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == [
        "..swin_tiny_patch4_window7_224.pth.host-3.download.x2.part", "swin_tiny_patch4_window7_224.pth"]
    (tmp_path / "weights" / "..swin_tiny_patch4_window7_224.pth.host-3.download.x2.part").unlink()
    assert torch.load(got, weights_only=True)["model"]["head.weight"].sum() == 6
    (folder / "v1.0.0" / "swin_tiny_patch4_window7_224.pth").unlink()
    assert fetch_official_weights("swin_tiny_patch4_window7_224", tmp_path / "weights", base_url=url) == got
    # a file that is no checkpoint (an HTML error page, say) is not kept under the variant's name
    (folder / "v1.0.0" / "swin_small_patch4_window7_224.pth").write_text("<html>rate limited</html>")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        fetch_official_weights("swin_small_patch4_window7_224", tmp_path / "weights", base_url=url)
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["swin_tiny_patch4_window7_224.pth"]
    with pytest.raises(UserError, match="no official weights"):
        fetch_official_weights("swin_micro_patch4_window4_128", tmp_path / "weights", base_url=url)
    # not there: the message names where a file fetched by other means goes, not the staging file
    want = tmp_path / "weights" / "swin_base_patch4_window7_224.pth"
    with pytest.raises(UserError, match=f"put it at {want}$"):
        fetch_official_weights("swin_base_patch4_window7_224", tmp_path / "weights", base_url=url)


def sample_archive(folder: Path, work: Path, photos: Path) -> str:
    """flower_photos.tgz holding 6 real photos of each of two classes; returns its SHA-256."""
    for name in ("daisy", "tulips"):
        (work / "flower_photos" / name).mkdir(parents=True)
        for photo in sorted((photos / name).glob("*.jpg"))[:6]:
            (work / "flower_photos" / name / photo.name).write_bytes(photo.read_bytes())
    with tarfile.open(folder / "flower_photos.tgz", "w:gz") as tar:
        tar.add(work / "flower_photos", arcname="flower_photos")
    return hashlib.sha256((folder / "flower_photos.tgz").read_bytes()).hexdigest()


TINY_RUN = ["--model", "swin_micro_patch4_window4_128", "--img-size", "64", "--batch-size", "4", "--workers", "0",
            "--epochs", "1", "--no-progress"]


def test_the_tutorials_command_fetches_flower_photos_then_trains(served, tmp_path, flowers, monkeypatch, capsys):
    import download
    import train
    folder, url = served
    digest = sample_archive(folder, tmp_path / "made", flowers)
    monkeypatch.setattr(download, "FLOWER_PHOTOS_URL", f"{url}/flower_photos.tgz")
    monkeypatch.setattr(download, "FLOWER_PHOTOS_SHA256", digest)
    project = tmp_path / "project"
    (project / "flower_photos").mkdir(parents=True)  # empty (made by hand, or left by a tool): fetched into
    monkeypatch.chdir(project)
    train.main(["--data-path", "flower_photos", "--num-classes", "2", *TINY_RUN, "--name", "run"])
    out = capsys.readouterr().out
    assert f"downloading {url}/flower_photos.tgz" in out and "SHA-256 checked" in out
    assert sorted(p.name for p in project.iterdir()) == ["flower_photos", "flower_photos.tgz", "runs"]
    assert sorted(p.name for p in (project / "flower_photos").iterdir()) == ["daisy", "tulips"]
    assert (project / "runs" / "run" / "last.pth").is_file()
    # a second run finds the photos and fetches nothing (the server may be gone)
    monkeypatch.setattr(download, "FLOWER_PHOTOS_URL", "http://127.0.0.1:9/flower_photos.tgz")
    train.main(["--data-path", "flower_photos", *TINY_RUN, "--name", "again"])
    assert "downloading" not in capsys.readouterr().out


def test_offline_the_tutorials_command_says_what_to_do(tmp_path, monkeypatch, capsys):
    import download
    import train
    from utils import run_cli
    with socket.socket() as probe:  # a port on 127.0.0.1 with nothing listening: as good as offline
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(download, "FLOWER_PHOTOS_URL", f"http://127.0.0.1:{port}/flower_photos.tgz")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: train.main(["--data-path", "flower_photos", "--num-classes", "5", *TINY_RUN]))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: flower_photos is not here")
    assert "could not download" in err and "configs/cpu_demo.yaml" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial archive, no half folder


def test_any_other_missing_path_stays_an_error(tmp_path, monkeypatch):
    import download
    import train
    monkeypatch.setattr(download, "download", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    for missing in ("flower_foto", "photos/flowers"):
        with pytest.raises(UserError, match=f"data path not found: .*{missing}. .*samples/flowers"):
            train.main(["--data-path", str(tmp_path / missing), *TINY_RUN])


def test_what_a_download_cannot_use_is_said_of_the_download_with_a_way_on_in_this_script(served, tmp_path,
                                                                                          monkeypatch):
    """Weights that do not load are said of the address that sent them (the staging file the message named was
    gone by then); train.py, which has no --sha256, says how to take another digest of flower_photos.tgz."""
    import download
    from download import fetch_official_weights
    folder, url = served
    (folder / "v1.0.0").mkdir()
    (folder / "v1.0.0" / "swin_small_patch4_window7_224.pth").write_text("<html>rate limited</html>")
    with pytest.raises(UserError, match=r"^what http://.*/swin_small_patch4_window7_224.pth sent is not a PyTorch "
                                        r"checkpoint .*put it at .*weights/swin_small_patch4_window7_224.pth$") as err:
        fetch_official_weights("swin_small_patch4_window7_224", tmp_path / "weights", base_url=url)
    assert ".download" not in str(err.value)
    flower_archive(folder, tmp_path / "made")
    monkeypatch.setattr(download, "FLOWER_PHOTOS_URL", f"{url}/flower_photos.tgz")
    with pytest.raises(UserError, match=r"and you trust this source, fetch it with python split_data.py --download "
                                        r"--data-path .*flower_photos --sha256 <its digest>, then train") as err:
        download.fetch_tutorial_photos(tmp_path / "flower_photos")
    assert "pass its digest with --sha256" not in str(err.value)
    # the demo's command, from another folder, goes where its config and samples/flowers are
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        download.fetch_tutorial_photos(tmp_path / "flower_photos")
    root = shlex.quote(str(Path(download.__file__).resolve().parent))
    assert str(err.value).endswith(f"bundled sample: cd {root} && python train.py --config configs/cpu_demo.yaml")


def test_an_address_not_named_as_an_archive_is_kept_as_the_data_folders_archive(served, tmp_path):
    """A URL ending in /data was written as the file data, where split_data.py's --out goes (then "--out data is
    a file"), or, with data/ there, read as the archive ("data: Is a directory")."""
    folder, url = served
    digest = flower_archive(folder, tmp_path / "made")
    (folder / "flower_photos.tgz").rename(folder / "data")
    (tmp_path / "project" / "data").mkdir(parents=True)
    download_module.fetch_flower_photos(tmp_path / "project" / "flower_photos", f"{url}/data", digest)
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["data", "flower_photos", "flower_photos.tgz"]


def test_what_split_data_cannot_use_is_refused_before_a_download(tmp_path, capsys, monkeypatch):
    """--sha256 that no file has (read after 218 MiB), an empty one or an empty --url (each quietly the official
    one), a --url that is no web address (said after a line that it was downloading), an --out that is a file or
    inside the photos (said after the download and extraction): refused first."""
    monkeypatch.setattr(download_module, "download", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    monkeypatch.chdir(tmp_path)
    for flag, value, said in (("--sha256", "xyz", "must be a SHA-256 digest, 64 hexadecimal digits, not 'xyz'"),
                              ("--sha256", "", "must be a SHA-256 digest"),
                              ("--url", "", "is empty (an unset shell variable?)"),
                              ("--url", "notaurl", "notaurl is no http:// or https:// address (to use a "
                                                   "flower_photos.tgz you have, put it beside --data-path under that "
                                                   "name and leave --url out)"),
                              ("--url", "ftp://x/y.tgz", "ftp://x/y.tgz is no http:// or https:// address"),
                              ("--url", "http://[::1", "http://[::1 is not a valid address")):
        with pytest.raises(SystemExit) as stopped:
            split_data.main(["--download", flag, value])
        assert stopped.value.code == 2 and said in capsys.readouterr().err
    (tmp_path / "data").write_text("x")
    with pytest.raises(UserError, match=r"^--out data is a file"):
        split_data.main(["--download"])
    with pytest.raises(UserError, match=r"^--out flower_photos/split is inside --data-path flower_photos"):
        split_data.main(["--download", "--out", "flower_photos/split"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_download_extracted_meanwhile_by_another_run_is_used(served, tmp_path, capsys, monkeypatch):
    """Two downloads into one folder at once: the second to finish found the folder taken and failed, naming its
    temporary folder; it uses the first's (the same checked archive)."""
    folder, url = served
    digest = flower_archive(folder, tmp_path / "made")
    target = tmp_path / "place" / "flower_photos"
    extract = download_module.safe_extract

    def and_another_run_first(archive, dest):
        extract(archive, dest)
        extract(archive, target.parent / "other")
        (target.parent / "other" / "flower_photos").rename(target)
    monkeypatch.setattr(download_module, "safe_extract", and_another_run_first)
    download_module.fetch_flower_photos(target, f"{url}/flower_photos.tgz", digest)
    assert "was extracted meanwhile by another run: using it" in capsys.readouterr().out
    assert sorted(p.name for p in target.parent.iterdir()) == ["flower_photos", "flower_photos.tgz", "other"]
    assert sorted(p.name for p in target.iterdir()) == ["LICENSE.txt", "daisy", "tulips"]


def test_an_archive_of_loose_files_is_not_taken_as_the_data_folder(tmp_path):
    """An archive holding files but no folders (not the photos meant: no class folders) is refused, and no data
    folder is made of it, where it became the data folder and the split failed later for another reason."""
    archive = tmp_path / "loose.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("a.jpg", "b.jpg"):
            member = tarfile.TarInfo(name)
            member.size = 3
            tar.addfile(member, io.BytesIO(b"jpg"))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()  # already beside it, checked: nothing downloaded
    with pytest.raises(UserError, match="holds no folders, so no class folders"):
        download_module.fetch_flower_photos(tmp_path / "photos", "http://127.0.0.1:9/loose.tgz", digest)
    assert not (tmp_path / "photos").exists()
