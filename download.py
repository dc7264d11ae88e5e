"""Fetching flower_photos and the official weights: a download that is either complete and
checked or absent, and an extraction that cannot write outside its folder.

    from download import fetch_flower_photos, fetch_official_weights
    fetch_flower_photos(Path("flower_photos"))   # flower_photos.tgz beside it, then flower_photos/<class>/
    fetch_official_weights("swin_tiny_patch4_window7_224")   # weights/swin_tiny_patch4_window7_224.pth
"""
import errno
import glob
import hashlib
import os
import shlex
import socket
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from files import current_umask
from processes import from_first_process, launched_first, on_first_process
from utils import UserError
from variants import resolve_variant

# The tutorial's link to the TensorFlow flowers archive (3,670 JPEGs in 5 class folders, 218 MiB).
FLOWER_PHOTOS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
# SHA-256 of that archive (228,813,984 bytes) as TensorFlow Datasets records it, in
# tensorflow/datasets: tensorflow_datasets/url_checksums/tf_flowers.txt; Google Coral's retraining
# script and the Yocto recipe for TensorFlow pin the same value. Not recomputed here: the machine this
# was written on has no internet. `--sha256` overrides it.
FLOWER_PHOTOS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
# the disk's refusals (full, over quota, read-only, not ours), not the network's nor the archive's
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".tgz", ".tar", ".gz", ".bz2", ".xz", ".tbz", ".tbz2", ".txz")  # what tarfile.open reads
SHA256_FLAG = "pass its digest with --sha256"  # split_data.py's; train.py has no such flag

# The official Microsoft releases (github.com/microsoft/Swin-Transformer), by variant; for the 1k
# variants of Swin-B and Swin-L the official ImageNet-1k weights are the 22k-pretrained ones.
OFFICIAL_WEIGHTS_URL = "https://github.com/SwinTransformer/storage/releases/download/"
OFFICIAL_WEIGHTS = {
    "swin_tiny_patch4_window7_224": "v1.0.0/swin_tiny_patch4_window7_224.pth",
    "swin_small_patch4_window7_224": "v1.0.0/swin_small_patch4_window7_224.pth",
    "swin_base_patch4_window7_224": "v1.0.0/swin_base_patch4_window7_224_22kto1k.pth",
    "swin_base_patch4_window12_384": "v1.0.0/swin_base_patch4_window12_384_22kto1k.pth",
    "swin_large_patch4_window7_224": "v1.0.0/swin_large_patch4_window7_224_22kto1k.pth",
    "swin_large_patch4_window12_384": "v1.0.0/swin_large_patch4_window12_384_22kto1k.pth",
    "swin_tiny_patch4_window7_224_in22k": "v1.0.8/swin_tiny_patch4_window7_224_22k.pth",
    "swin_small_patch4_window7_224_in22k": "v1.0.8/swin_small_patch4_window7_224_22k.pth",
    "swin_base_patch4_window7_224_in22k": "v1.0.0/swin_base_patch4_window7_224_22k.pth",
    "swin_base_patch4_window12_384_in22k": "v1.0.0/swin_base_patch4_window12_384_22k.pth",
    "swin_large_patch4_window7_224_in22k": "v1.0.0/swin_large_patch4_window7_224_22k.pth",
    "swin_large_patch4_window12_384_in22k": "v1.0.0/swin_large_patch4_window12_384_22k.pth",
    "swinv2_tiny_patch4_window8_256": "v2.0.0/swinv2_tiny_patch4_window8_256.pth",
    "swinv2_tiny_patch4_window16_256": "v2.0.0/swinv2_tiny_patch4_window16_256.pth",
    "swinv2_small_patch4_window8_256": "v2.0.0/swinv2_small_patch4_window8_256.pth",
    "swinv2_small_patch4_window16_256": "v2.0.0/swinv2_small_patch4_window16_256.pth",
    "swinv2_base_patch4_window8_256": "v2.0.0/swinv2_base_patch4_window8_256.pth",
    "swinv2_base_patch4_window16_256": "v2.0.0/swinv2_base_patch4_window16_256.pth",
    "swinv2_base_patch4_window12_192": "v2.0.0/swinv2_base_patch4_window12_192_22k.pth",
    "swinv2_large_patch4_window12_192": "v2.0.0/swinv2_large_patch4_window12_192_22k.pth",
    "swinv2_base_patch4_window12to16_192to256": "v2.0.0/swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth",
    "swinv2_base_patch4_window12to24_192to384": "v2.0.0/swinv2_base_patch4_window12to24_192to384_22kto1k_ft.pth",
    "swinv2_large_patch4_window12to16_192to256": "v2.0.0/swinv2_large_patch4_window12to16_192to256_22kto1k_ft.pth",
    "swinv2_large_patch4_window12to24_192to384": "v2.0.0/swinv2_large_patch4_window12to24_192to384_22kto1k_ft.pth",
}


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest, sha256: str | None = None, wanted_at=None,
             trust=SHA256_FLAG) -> str:
    """Download `url` to `dest` with a progress bar; returns the file's SHA-256.

    The bytes go to a temporary file beside `dest`, renamed to `dest` only once complete and,
    when `sha256` is given, matching it; on any failure the temporary file is deleted, so `dest`
    is either a whole, checked file or absent. `wanted_at` (default `dest`) is where an error
    message tells the user to put a file fetched by other means; `trust`, how this script takes another digest.
    """
    dest = Path(dest)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as error:  # "http://[::1": urllib's, before any connection
        raise UserError(f"{url} is not a valid address: {error}") from None
    if scheme not in ("http", "https"):  # a local path, a mistyped scheme (htp://), file://: no download
        raise UserError(f"cannot download {url}: an http:// or https:// address is needed. To use a file you have, "
                        f"put it at {wanted_at or dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as error:  # a read-only or someone else's folder: said of it, not of a hidden temporary name
        raise UserError(f"cannot write {dest.name} into {dest.parent.resolve()}: {error.strerror}. Run from a folder "
                        "you can write to, or give a --data-path there") from None
    partial = Path(partial)
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as file, urllib.request.urlopen(url, timeout=60) as response:
            length = (response.headers.get("Content-Length") or "").strip()
            total = int(length) if length.isdigit() and int(length) > 0 else None  # none, or one past reading
            with tqdm(total=total, desc=f"downloading {Path(wanted_at or dest).name}", unit="B",
                      unit_scale=True) as bar:
                while chunk := response.read1(CHUNK):  # what has come: the bar moves on a slow link too
                    file.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        received = partial.stat().st_size
        if total is not None and received != total:
            raise UserError(f"the download of {url} stopped after {received:,} of {total:,} bytes: try again")
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            # a transfer cut short ends so too where the server sent no length to check it by: trusting what came
            # then would keep a broken archive
            cut = "" if total is not None else " (this server sent no length, so one cut short ends so too)"
            raise UserError(f"{url} does not have the expected SHA-256 (expected {sha256.lower()}, got "
                            f"{digest.hexdigest()}), so it was not kept: try again{cut}. If the same digest comes "
                            f"again and you trust this source, {trust}")
        os.chmod(partial, 0o666 & ~current_umask())  # mkstemp's file is the owner's alone; a download is not
        os.replace(partial, dest)
    except ValueError as error:  # urllib's, for an address it cannot take apart (a bad port)
        raise UserError(f"cannot download {url}: {error}. Check the address, or fetch the file by other means and "
                        f"put it at {wanted_at or dest}") from None
    except urllib.error.HTTPError as error:  # the server answered: the network is fine, the address is not
        raise UserError(f"could not download {url}: the server answered {error.code} {error.reason} (the address is "
                        "wrong, has moved, or the server failed): try again later, or fetch the file by other means "
                        f"and put it at {wanted_at or dest}") from None
    except (urllib.error.URLError, HTTPException, OSError) as error:
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            raise UserError(f"could not write {dest}: {error.strerror}. Free some space in {dest.parent.resolve()} "
                            "(or make it writable), or download to another folder") from None
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise UserError(f"could not download {url} to {dest}: {reason}. Check the network, "
                        f"or fetch the file by other means and put it at {wanted_at or dest}") from None
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()


def safe_extract(archive, dest) -> None:
    """Extract the tar archive `archive` into the folder `dest`.

    Refused whole, before anything is written, if a member would land outside `dest` (an absolute
    path, `..`), is a symbolic or hard link, or is anything but a regular file or a folder (a
    device, a FIFO): an archive from the network must not write where it likes.
    """
    dest = Path(dest).resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                target = (dest / member.name).resolve()
                if member.issym() or member.islnk():
                    problem = f"is a link (to {member.linkname!r})"
                elif not (member.isfile() or member.isdir()):
                    problem = "is a device file or FIFO, not a file or folder"
                elif target != dest and dest not in target.parents:
                    problem = "would be written outside the folder it is extracted into"
                else:
                    continue
                raise UserError(f"refusing to extract {archive}: its member {member.name!r} {problem}")
            dest.mkdir(parents=True, exist_ok=True)
            # the checks above already refuse what the "data" filter (Python >= 3.11.4) refuses;
            # the filter also drops set-uid bits and other permissions a download should not carry
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kwargs)
    except tarfile.ReadError:  # its message lists each compression tried, a line each
        raise UserError(f"cannot extract {archive}: it is no tar archive (.tar, .tgz, .tar.gz, .tar.bz2 or "
                        ".tar.xz), or a damaged one") from None
    except OSError as error:
        if error.errno in DISK_ERRORS:
            raise DiskError(error.strerror) from None
        raise UserError(f"cannot extract {archive}: {error}") from None
    except (tarfile.TarError, EOFError) as error:
        raise UserError(f"cannot extract {archive}: {error}") from None


class DiskError(UserError):
    """An extraction that the disk, not the archive, stopped (full, read-only): the archive is fine."""


def fetch_flower_photos(data_path: Path, url: str | None = None, sha256: str | None = None,
                        trust: str = SHA256_FLAG) -> None:
    """Make `data_path` the extracted archive's folder of class folders, keeping the archive beside it.

    url and sha256 default to the tutorial's archive and its digest (read when called, so that tests
    can point them at a local server). Nothing to do if `data_path` exists, unless empty. An archive already beside
    it is used if its digest matches.
    """
    url, sha256 = url or FLOWER_PHOTOS_URL, (sha256 or FLOWER_PHOTOS_SHA256).lower()
    data_path = Path(data_path)
    if data_path.is_dir() and not any(data_path.iterdir()):  # made by hand, or left by a tool: nothing to keep
        data_path.rmdir()
    if data_path.exists():
        print(f"{data_path} already exists: not downloading")
        return
    try:
        name = Path(urlsplit(url).path).name
    except ValueError as error:  # "http://[::1": urllib's, before any connection
        raise UserError(f"--url {url} is not a valid address: {error}") from None
    # the archive beside the data folder, under its own name where that is an archive's: never the data folder's own
    # (a URL ending in /flower_photos), nor another folder's (/data: split_data.py's --out), nor . or ..
    archive = data_path.parent / (name if name.lower().endswith(ARCHIVE_SUFFIXES) else f"{data_path.name}.tgz")
    remove_stale_downloads(data_path.parent, [f".{glob.escape(archive.name)}.*.part", ".extracting-*"])
    if archive.exists():
        actual = sha256_of(archive)
        if actual != sha256:
            raise UserError(f"{archive} is already there but its SHA-256 is {actual}, not {sha256}: "
                            f"move it away so that it can be downloaded again, or, if you trust it, {trust}")
        print(f"using {archive}, already downloaded (SHA-256 {actual})")
    else:
        print(f"downloading {url} to {archive} (SHA-256 checked), then extracting it to {data_path}")
        download(url, archive, sha256, trust=trust)
    # extracted beside the target and renamed at the end: an interrupted run leaves no half data_path
    try:
        staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=data_path.parent))
    except OSError as error:
        raise UserError(f"cannot extract {archive} into {data_path.parent.resolve()}: {error.strerror}") from None
    try:
        try:
            safe_extract(archive, staging)
        except DiskError as err:  # the archive is whole and checked: keep it, and say what to free
            raise UserError(f"cannot extract {archive} into {data_path.parent.resolve()}: {err}. {archive} is whole "
                            "and kept: free some space (or make the folder writable) and run again") from None
        except UserError as err:  # kept, its digest right, it would fail the same way at every run
            raise UserError(f"{err}. Remove {archive} to download it again") from None
        entries = [entry for entry in staging.iterdir() if not entry.name.startswith(".")]
        if not any(entry.is_dir() for entry in entries):  # an empty archive, or loose files: no class folders
            raise UserError(f"{archive} holds no folders, so no class folders for {data_path}: it is not the "
                            f"archive meant; remove it and check --url")
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging  # flower_photos/
        if top == staging:  # mkdtemp's folder is the owner's alone; the data folder is not
            os.chmod(staging, 0o777 & ~current_umask())
        try:
            top.rename(data_path)
        except OSError:
            if not data_path.is_dir():
                raise
            # another run, started beside this one, extracted the same archive first: the same checked photos
            print(f"{data_path} was extracted meanwhile by another run: using it")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_downloads(folder: Path, patterns: list[str]) -> None:
    """What a download or extraction killed outright (SIGKILL, a power cut) left in folder, hidden: partial
    downloads (.<name>.*.part) and half-extracted folders (.extracting-*), as large as the data or the weights.
    Runs that were only stopped remove their own; these are old, from no process still writing them."""
    stale = time.time() - 3600  # an hour untouched: not another download going on now
    for left in [left for pattern in patterns for left in folder.glob(pattern)]:
        try:  # another job's, removed meanwhile, or another user's (a shared /tmp): left as it is
            status = left.lstat()
            if status.st_mtime >= stale or hasattr(os, "getuid") and status.st_uid != os.getuid():
                continue
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left)
            else:
                left.unlink()
        except OSError:
            continue


def fetch_tutorial_photos(data_path: Path) -> None:
    """train.py's: the tutorial's command names flower_photos before anything made it, so it is fetched as
    `split_data.py --download` does; what went wrong says that, and where else to go."""
    try:
        fetch_flower_photos(data_path, trust=f"fetch it with python split_data.py --download --data-path "
                                              f"{shlex.quote(str(data_path))} --sha256 <its digest>, then train")
    except UserError as err:
        root = Path(__file__).resolve().parent  # the demo's config names samples/flowers from the project's folder
        here = "" if Path.cwd().resolve() == root else f"cd {shlex.quote(str(root))} && "
        raise UserError(f"{data_path} is not here, so train.py tried to fetch the tutorial's photos: {err}. "
                        f"Or train on the bundled sample: {here}python train.py --config configs/cpu_demo.yaml"
                        ) from None


def fetch_tutorial_photos_if_missing(data_path: Path, eval_only: bool = False) -> None:
    """train.py's --data-path flower_photos, the tutorial's command as typed, missing or an empty folder: fetched
    (fetch_tutorial_photos). The first process decides: another machine may see other folders."""
    if from_first_process(launched_first() and data_path.name == "flower_photos" and  # missing, or an empty folder
                          (not data_path.exists() or data_path.is_dir() and not any(data_path.iterdir()))):
        if eval_only:  # an evaluation of images the user has: none fetched for it
            raise UserError(f"--eval-only evaluates the images in --data-path, and {data_path} is not here (or "
                            "empty): give --data-path DIR, a folder of class folders or split_data.py's folder")
        on_first_process(lambda: fetch_tutorial_photos(data_path))


def official_weights_file(variant: str, folder="weights") -> Path:
    """Where a variant's official weights are looked for and downloaded to: weights/<variant>.pth."""
    return Path(folder) / f"{variant}.pth"


def names_official_file(weights, variant: str) -> bool:
    """Whether --weights names no file, the official file's own (configs/finetune_*.yaml name it) or the tutorial's
    place for it (its --weights ./<variant>.pth): the run's official weights then, from weights/ or the tutorial's
    place, fetched by --download-weights."""
    return weights is None or weights != "none" and \
        Path(weights) in (official_weights_file(variant), tutorial_weights_file(variant))


def tutorial_weights_file(variant: str) -> Path:
    """Where the tutorial's train.py reads a variant's official weights, ./<variant>.pth: used when weights/ has
    none."""
    return Path(f"{variant}.pth")


def fetch_official_weights(variant: str, folder="weights", base_url: str | None = None) -> Path:
    """weights/<variant>.pth, downloaded from the official release unless it is there already.

    The releases publish no checksums, so the file is checked by reading it as a checkpoint (with
    weights_only=True) before it takes the name; load_weights then checks it fits the model.
    """
    from checkpoints import load_checkpoint  # here: it imports torch, which split_data.py does without

    dest = official_weights_file(variant, folder)
    if dest.is_file():
        return dest
    if variant not in OFFICIAL_WEIGHTS:
        raise UserError(f"{variant} has no official weights to download; train it from scratch or pass --weights")
    url = (base_url or OFFICIAL_WEIGHTS_URL).rstrip("/") + "/" + OFFICIAL_WEIGHTS[variant]
    # a name of its own: machines that share the folder each fetch and check a whole file, renamed into place
    staging = dest.with_name(f".{dest.name}.{socket.gethostname()}-{os.getpid()}.download")
    # a download killed outright left its file (download's .part of the staging name: ..<name>.*.download.*.part)
    # or its whole, unchecked one (.download): hundreds of MB
    name = glob.escape(dest.name)
    remove_stale_downloads(dest.parent, [f".{name}.*.download", f"..{name}.*.download.*.part"])
    print(f"downloading the official weights of {variant} from {url}")
    download(url, staging, wanted_at=dest)  # checked as a checkpoint before it takes the name
    try:
        try:
            load_checkpoint(staging)
        except UserError as err:  # said of the download, not of the staging file, which is gone when this is read
            raise UserError(f"{str(err).replace(str(staging), f'what {url} sent', 1)}; it was not kept: try again "
                            f"later, or fetch the file by other means and put it at {dest}") from None
        os.replace(staging, dest)
    finally:
        staging.unlink(missing_ok=True)
    return dest


def fetch_weights_asked(weights, model: str) -> None:
    """train.py --download-weights: the official weights of --model into weights/, where --weights names them
    (names_official_file); none where the tutorial keeps the file (./<variant>.pth), which the run then uses. By the
    first process of each machine: each machine's weights/ may be its own disk."""
    variant = resolve_variant(model)
    if names_official_file(weights, variant) and not tutorial_weights_file(variant).is_file():
        on_first_process(lambda: fetch_official_weights(variant), each_machine=True)
