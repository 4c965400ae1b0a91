"""Download, verify and unpack the public video-anomaly datasets (``ssmtl download``).

Sources (the official pages; the sha256 sums are the ones recorded by anomalib's dataset modules):

* **UCSD Ped2** -- Mahadevan et al., "Anomaly Detection in Crowded Scenes", CVPR 2010.
  http://www.svcl.ucsd.edu/projects/anomaly/dataset.htm, archive ``UCSD_Anomaly_Dataset.tar.gz`` (Ped1 and
  Ped2 together).
* **CUHK Avenue** -- Lu, Shi and Jia, "Abnormal Event Detection at 150 FPS in MATLAB", ICCV 2013.
  http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/dataset.html, archives ``Avenue_Dataset.zip``
  (videos) and ``ground_truth_demo.zip`` (pixel masks).
* **ShanghaiTech Campus** -- Liu et al., "Future Frame Prediction for Anomaly Detection -- A New Baseline",
  CVPR 2018. There is no stable official download link, so it is not downloaded: :func:`download_dataset`
  raises an :class:`~ssmtl_core.errors.SSMTLError` that says where to get it and how to lay it out.

What :func:`download_dataset` does, and why:

1. Each archive is fetched into ``<root>/.downloads/<filename>.part`` and renamed to ``<filename>`` only
   once it is complete and its sha256 matches, so a file named ``<filename>`` is always a good archive.
   A rerun with a ``.part`` on disk resumes with an HTTP ``Range: bytes=N-`` request (a server that
   ignores ranges and answers 200 makes it restart from byte 0). Broken connections are retried, resuming
   each time; after :data:`MAX_ATTEMPTS` failures in a row without progress the partial file is kept and
   the error says that a rerun resumes.
2. A sha256 mismatch renames the download to ``<filename>.bad`` (kept for inspection, never reused) so a
   rerun downloads afresh; nothing is unpacked.
3. Unpacking goes into a temporary folder ``<root>/.unpack-<name>-*`` (members with absolute paths, ``..``
   components, links that point outside, or device files are refused), then the wanted folders are moved
   into place and a marker ``<root>/.downloads/<name>.unpacked`` is written; a rerun with a valid marker does
   nothing and says so (delete the marker to force unpacking again). ``<root>/.downloads/<name>.created``
   lists the top-level folders this module created: only those are ever replaced, so a user's own folder
   in the way stops the run with an error instead of being overwritten.

Layout produced (what the readers expect):

* ``ped2``: ``<root>/Train/TrainNNN/*.tif``, ``<root>/Test/TestNNN/*.tif``, ``<root>/Test/TestNNN_gt/*.bmp``,
  ``<root>/Test/UCSDped2.m``. The Ped1 half of the tarball is **discarded** (the temporary folder is
  deleted); the tarball itself stays in ``<root>/.downloads/`` should anyone want Ped1.
* ``avenue``: ``<root>/training_videos/NN.avi``, ``<root>/testing_videos/NN.avi`` (plus whatever else the
  ``Avenue Dataset`` folder of the zip holds, e.g. ``training_vol/`` and ``testing_vol/``), and
  ``<root>/ground_truth_demo/testing_label_mask/N_label.mat``.

The archives are kept in ``<root>/.downloads/``; they may be deleted once unpacked to save space (the marker
alone is enough for a rerun to skip the work).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from ssmtl_core.errors import SSMTLError
from ssmtl_core.io import read_json, write_json

__all__ = [
    "Archive",
    "DOWNLOADS_DIR",
    "MAX_ATTEMPTS",
    "SHANGHAITECH_HELP",
    "SOURCES",
    "download_dataset",
    "fetch_archive",
    "unpack_archive",
]

#: Sub-folder of the dataset root holding the archives, partial downloads and markers.
DOWNLOADS_DIR = ".downloads"
#: Seconds a single socket operation may block before the attempt counts as a broken connection.
TIMEOUT_S = 60.0
#: Failed attempts in a row (without any new byte arriving) before giving up; progress resets the count.
MAX_ATTEMPTS = 5
#: Seconds to wait before retry k (k * RETRY_WAIT_S), so a flaky link gets a moment to recover.
RETRY_WAIT_S = 2.0
#: Read size for downloads and hashing: large enough to keep syscalls rare, small enough for a smooth bar.
CHUNK = 1 << 20
_USER_AGENT = "ssmtl-study-download/0.1 (+urllib)"


@dataclasses.dataclass(frozen=True)
class Archive:
    """One archive to fetch and how to rearrange its contents under the dataset root.

    Attributes:
        url: where to download it from (the dataset's official page).
        sha256: the published sha256 of the archive (lower-case hex).
        filename: the name it is saved under in ``<root>/.downloads/``.
        moves: ``(source, destination)`` pairs, ``source`` being a path inside the unpacked archive and
            ``destination`` a path relative to the root; ``"."`` as destination moves the *contents* of
            ``source`` into the root. Everything not moved is discarded.
        provides: paths relative to the root that must exist afterwards; they are checked after unpacking,
            protect a user's own folders from being overwritten, and make a marker valid on a rerun.
    """

    url: str
    sha256: str
    filename: str
    moves: tuple[tuple[str, str], ...]
    provides: tuple[str, ...]


#: Dataset name -> the archives that make it up. Tests pass local URLs via ``download_dataset(sources=)``.
SOURCES: dict[str, list[Archive]] = {
    "ped2": [
        Archive(
            url="http://www.svcl.ucsd.edu/projects/anomaly/UCSD_Anomaly_Dataset.tar.gz",
            sha256="2329af326951f5097fdd114c50e853957d3e569493a49d22fc082a9fd791915b",
            filename="UCSD_Anomaly_Dataset.tar.gz",
            # The readers want Train/ and Test/ at the root; Ped1 (UCSDped1/) is not used and is dropped.
            moves=(("UCSD_Anomaly_Dataset.v1p2/UCSDped2", "."),),
            provides=("Train", "Test"),
        )
    ],
    "avenue": [
        Archive(
            url="http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/Avenue_Dataset.zip",
            sha256="fc9cb8432a11ca79c18aa180c72524011411b69d3b0ff27c8816e41c0de61531",
            filename="Avenue_Dataset.zip",
            # The zip wraps everything in a folder with a space in its name; lift its contents to the root.
            moves=(("Avenue Dataset", "."),),
            provides=("training_videos", "testing_videos"),
        ),
        Archive(
            url="http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/ground_truth_demo.zip",
            sha256="60fec1728ec8f73a58aad3aeb5729d70a805a47e0b8eb4bf91ab67ef06386d77",
            filename="ground_truth_demo.zip",
            moves=(("ground_truth_demo", "ground_truth_demo"),),
            provides=("ground_truth_demo/testing_label_mask",),
        ),
    ],
}

SHANGHAITECH_HELP = (
    "ShanghaiTech Campus has no stable official download link (the usual mirrors are dead), so "
    "`ssmtl download` cannot fetch it: get it by hand via the project of Liu et al., CVPR 2018, "
    '"Future Frame Prediction for Anomaly Detection - A New Baseline" '
    "(https://github.com/StevenLiuWen/ano_pred_cvpr2018, whose README links the dataset; dataset page "
    "https://svip-lab.github.io/dataset/campus_dataset.html), unpack it so that one folder holds "
    "training/videos/SS_VVVV.avi, testing/frames/SS_VVVV/NNN.jpg, testing/test_frame_mask/SS_VVVV.npy and "
    "testing/test_pixel_mask/SS_VVVV.npy, and pass that folder as --root{root_hint}."
)


class _Retryable(Exception):
    """A transient network problem: the attempt failed but resuming may succeed."""


def _say(message: str) -> None:
    # tqdm.write keeps one-line messages from tearing a progress bar that may be on screen.
    tqdm.write(message, file=sys.stderr)


def _as_archive(item: Archive | Mapping[str, Any]) -> Archive:
    if isinstance(item, Archive):
        return item
    data = dict(item)
    data["moves"] = tuple(tuple(m) for m in data.get("moves", ()))
    data["provides"] = tuple(data.get("provides", ()))
    try:
        return Archive(**data)
    except TypeError as e:
        raise SSMTLError(
            f"Bad archive description {item!r}: {e}; give url, sha256, filename, moves and provides."
        ) from e


# --------------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------------


def download_dataset(
    name: str,
    root: str | Path,
    progress: bool = True,
    sources: Mapping[str, Iterable[Archive | Mapping[str, Any]]] | None = None,
) -> Path:
    """Download, verify and unpack a dataset into ``root``; return the dataset root.

    UCSD Ped2 comes from http://www.svcl.ucsd.edu/projects/anomaly/ (Mahadevan et al., CVPR 2010), CUHK
    Avenue from http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/ (Lu et al., ICCV 2013).
    ShanghaiTech (Liu et al., CVPR 2018) has no stable link and raises an error explaining the manual route.

    Args:
        name: ``"ped2"``, ``"avenue"`` or ``"shanghaitech"`` (case-insensitive).
        root: the dataset root; created if missing. Archives go to ``<root>/.downloads/``.
        progress: show tqdm progress bars (bytes with rate) for download, verification and unpacking.
        sources: replaces :data:`SOURCES` (name -> list of :class:`Archive` or equivalent dicts); tests use
            it to point at a local server.

    Returns:
        The dataset root as an absolute :class:`~pathlib.Path`, laid out as described in the module docstring.

    Raises:
        SSMTLError: unknown dataset, ShanghaiTech, network failure after retries (the partial download is
            kept), checksum mismatch (the file is renamed ``.bad``), an unsafe or unexpected archive, or a
            folder in ``root`` that would be overwritten but was not made by this function.
    """
    key = name.strip().lower()
    table = SOURCES if sources is None else sources
    root = Path(root).expanduser().absolute()
    if key not in table:
        if key == "shanghaitech":
            raise SSMTLError(SHANGHAITECH_HELP.format(root_hint=f" (e.g. {root})"))
        choices = ", ".join(sorted(set(table) | {"shanghaitech"}))
        raise SSMTLError(f"Unknown dataset {name!r}: choose one of {choices}.")
    archives = [_as_archive(a) for a in table[key]]

    if root.exists() and not root.is_dir():
        raise SSMTLError(f"The dataset root {root} is a file, not a folder; pass a folder path as --root.")
    downloads = root / DOWNLOADS_DIR
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SSMTLError(f"Cannot create {downloads} ({e.strerror}); pick a writable --root.") from e

    marker = downloads / f"{key}.unpacked"
    created = downloads / f"{key}.created"
    done = _read_marker(marker)
    wanted = [a.sha256.lower() for a in archives]
    provides = [p for a in archives for p in a.provides]
    if done is not None:
        missing = [p for p in provides if not (root / p).exists()]
        if done.get("sha256") == wanted and not missing:
            _say(
                f"{key}: already downloaded and unpacked in {root}; skipping "
                f"(delete {marker} to unpack again)."
            )
            return root
        why = f"{missing[0]} is missing" if missing else "the archives changed"
        _say(f"{key}: marker {marker} is stale ({why}); unpacking again.")

    # Folders we may replace: those our own (possibly interrupted) earlier runs created. Anything else
    # already in the way belongs to the user, and we stop before spending an hour on the download.
    owned = _owned_targets(marker, created)
    for rel in provides:
        top = PurePosixPath(rel).parts[0]
        if (root / top).exists() and top not in owned:
            raise SSMTLError(
                f"{root / top} already exists and was not created by `ssmtl download`; if it already holds "
                f"the {key} dataset use it as is, otherwise move it away or choose an empty --root."
            )

    # A stale marker must not outlive a run that fails half-way; ownership lives on in the .created record.
    marker.unlink(missing_ok=True)
    _remove_stale_temp(root, key)
    paths = [fetch_archive(a, downloads, progress=progress) for a in archives]

    for archive, path in zip(archives, paths, strict=True):
        unpack_archive(path, archive, root, key, progress=progress)

    write_json(
        marker,
        {
            "dataset": key,
            "sha256": wanted,
            "archives": [{"url": a.url, "filename": a.filename} for a in archives],
            "targets": sorted(_owned_targets(created)),
            "unpacked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    _say(f"{key}: ready in {root}.")
    return root


# --------------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------------


def fetch_archive(archive: Archive, downloads: str | Path, progress: bool = True) -> Path:
    """Return ``downloads/<filename>``, downloading (resumably) and verifying it if needed.

    Args:
        archive: what to fetch.
        downloads: the folder that holds archives and ``.part`` files.
        progress: show progress bars.

    Raises:
        SSMTLError: the server refuses the file, the connection keeps breaking (the ``.part`` is kept), or
            the sha256 does not match (the file is renamed to ``<filename>.bad``).
    """
    downloads = Path(downloads)
    final = downloads / archive.filename
    part = downloads / f"{archive.filename}.part"
    bad = downloads / f"{archive.filename}.bad"
    expected = archive.sha256.lower()

    if final.exists():
        actual = _sha256(final, progress)
        if actual == expected:
            _say(f"{final.name}: already downloaded and verified; not downloading again.")
            return final
        # A finished name is only given to verified files, so this one was damaged or replaced on disk.
        os.replace(final, bad)
        _say(
            f"{final}: sha256 {actual} is not the expected {expected}; "
            f"renamed to {bad.name}, downloading again."
        )

    failures, last_error = 0, ""
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _download_once(archive.url, part, progress)
            break
        except _Retryable as e:
            last_error = str(e)
            now = part.stat().st_size if part.exists() else 0
            # A connection that breaks every few hundred MB still gets the file home: only attempts that
            # brought nothing new count towards giving up.
            failures = 0 if now > before else failures + 1
            if failures >= MAX_ATTEMPTS:
                raise SSMTLError(
                    f"Could not download {archive.url} ({last_error}, {MAX_ATTEMPTS} attempts in a row); "
                    f"the partial file {part} ({now} bytes) is kept and rerunning the same command resumes "
                    f"from there."
                ) from e
            tries = f" (attempt {failures + 1} of {MAX_ATTEMPTS})" if failures else ""
            _say(f"{archive.filename}: {last_error}; retrying from byte {now}{tries}.")
            time.sleep(RETRY_WAIT_S * max(failures, 1))

    actual = _sha256(part, progress)
    if actual != expected:
        os.replace(part, bad)
        raise SSMTLError(
            f"Checksum mismatch for {final}: expected sha256 {expected}, got {actual}; the download was "
            f"renamed to {bad} (nothing was unpacked) so a rerun downloads it afresh - if it happens again, "
            f"the server at {archive.url} is serving a different file."
        )
    os.replace(part, final)
    return final


def _download_once(url: str, part: Path, progress: bool) -> None:
    """One HTTP attempt: append to ``part`` from its current size; return when the file is complete."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            if e.code == 416 and offset:
                # "Range not satisfiable": either the .part is already whole, or it is longer than the file.
                total = _total_from_content_range(e.headers.get("Content-Range", ""))
                if total == offset:
                    return
                part.unlink()
                raise _Retryable(f"the server rejected resuming at byte {offset}; starting over") from e
            if e.code in (408, 425, 429) or e.code >= 500:
                raise _Retryable(f"HTTP {e.code} {e.reason}") from e
            raise SSMTLError(
                f"The server answered HTTP {e.code} {e.reason} for {url}; the file may have moved - "
                f"check the dataset's page and pass the new address, or retry later."
            ) from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise _Retryable(f"cannot connect: {reason}") from e
    except ValueError as e:  # urllib's answer to a malformed address, e.g. a missing "http://"
        raise SSMTLError(f"{url!r} is not a valid download address ({e}); check the URL.") from e

    with response:
        status = response.status
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start is None or start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"the server resumed at {start!r} instead of byte {offset}; starting over")
            mode = "ab"
        elif status == 200:
            if offset:
                _say(f"{part.name}: the server does not support resuming; restarting from byte 0.")
                offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise SSMTLError(f"Unexpected HTTP {status} from {url}; retry later or check the address.")

        size = offset
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
            file=sys.stderr,
        )
        with bar, open(part, mode) as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as e:
                    raise _Retryable(f"connection broken after {size} bytes: {e}") from e
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise SSMTLError(
                        f"Cannot write {part} ({e.strerror}); free some disk space and rerun to resume."
                    ) from e
                size += len(chunk)
                bar.update(len(chunk))
    # urllib returns b"" quietly when a connection dies before Content-Length bytes arrived, so the size
    # check is what tells a truncated transfer from a finished one.
    if total is not None and size < total:
        raise _Retryable(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink()
        raise _Retryable(f"received {size} bytes but the server announced {total}; starting over")


def _parse_content_range(value: str) -> tuple[int | None, int | None]:
    """``"bytes S-E/T"`` -> ``(S, T)``; ``(None, None)`` when unreadable (the caller then starts over)."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def _total_from_content_range(value: str) -> int | None:
    m = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value)
    return int(m.group(1)) if m else None


def _sha256(path: Path, progress: bool) -> str:
    digest = hashlib.sha256()
    bar = tqdm(
        total=path.stat().st_size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"verify {path.name.removesuffix('.part')}",
        disable=not progress,
        file=sys.stderr,
    )
    with bar, open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------
# unpack
# --------------------------------------------------------------------------------------------------------


def unpack_archive(
    path: str | Path, archive: Archive, root: str | Path, name: str, progress: bool = True
) -> None:
    """Safely unpack ``path`` into a temporary folder in ``root`` and move ``archive.moves`` into place.

    Args:
        path: the verified archive (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.zip``).
        archive: its description (moves and provided paths).
        root: the dataset root.
        name: the dataset name, used for the temporary folder and for ``<name>.created``, the record of
            which top-level folders of ``root`` this function created (and may therefore replace).
        progress: show a progress bar.

    Raises:
        SSMTLError: a member would land outside the target (absolute path, ``..``, outside link, device
            file), the archive is damaged, it lacks an expected folder, or a target belongs to the user.
    """
    path, root = Path(path), Path(root)
    created = root / DOWNLOADS_DIR / f"{name}.created"
    marker = root / DOWNLOADS_DIR / f"{name}.unpacked"
    # The temp folder sits inside root so the final moves are cheap renames on the same filesystem.
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".unpack-{name}-", dir=root))
    except OSError as e:
        raise SSMTLError(f"Cannot create a folder in {root} ({e.strerror}); pick a writable --root.") from e
    try:
        _say(f"{path.name}: unpacking into {root}.")
        try:
            if path.name.lower().endswith(".zip"):
                _extract_zip(path, tmp, progress)
            else:
                _extract_tar(path, tmp, progress)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
            raise SSMTLError(f"{path} is damaged ({e}); delete it and rerun to download it again.") from e
        except OSError as e:
            raise SSMTLError(
                f"Cannot unpack {path} into {root} ({e.strerror or e}); check free space and permissions, "
                f"then rerun."
            ) from e

        plan: list[tuple[Path, Path]] = []
        for src_rel, dst_rel in archive.moves:
            src = tmp / src_rel
            if not src.exists():
                raise SSMTLError(
                    f"{path} does not contain {src_rel!r}; it is not the expected archive - delete it "
                    f"and rerun."
                )
            if dst_rel in (".", ""):
                plan += [(child, root / child.name) for child in sorted(src.iterdir())]
            else:
                plan.append((src, root / dst_rel))

        owned = _owned_targets(marker, created)
        for _, dst in plan:
            rel = dst.relative_to(root).as_posix()
            top = PurePosixPath(rel).parts[0]
            if top == DOWNLOADS_DIR or top.startswith(".unpack-"):
                raise SSMTLError(
                    f"{path} contains {rel!r}, which clashes with this tool's own files; refusing."
                )
            if dst.exists() and top not in owned:
                raise SSMTLError(
                    f"{dst} already exists and was not created by `ssmtl download`; "
                    f"move it away or choose an empty --root."
                )
        # Record what we are about to create before touching it (and keep the record), so a rerun after an
        # interruption, or after the user deleted the marker, may replace these folders and only these.
        claimed = sorted(_owned_targets(created) | {d.relative_to(root).parts[0] for _, d in plan})
        write_json(created, {"dataset": name, "targets": claimed})

        for src, dst in plan:
            try:
                if dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst)
                elif dst.exists() or dst.is_symlink():
                    dst.unlink()
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            except OSError as e:
                raise SSMTLError(
                    f"Cannot move {dst.name} into place in {root} ({e.strerror or e}); check permissions and "
                    f"rerun (the downloaded archive is kept)."
                ) from e

        missing = [p for p in archive.provides if not (root / p).exists()]
        if missing:
            raise SSMTLError(
                f"After unpacking {path}, {root / missing[0]} is missing; "
                f"the archive is not the expected one - delete it and rerun."
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_name(name: str, archive: Path) -> None:
    """Refuse member names that would escape the extraction folder (absolute, drive letter or ``..``)."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in PurePosixPath(posix).parts:
        raise SSMTLError(
            f"Refusing to unpack {archive}: member {name!r} would be written outside the target folder "
            f"(absolute path or '..'); this is not the official archive - delete it and rerun."
        )


def _extract_tar(path: Path, dest: Path, progress: bool) -> None:
    # Python >= 3.11.4/3.12 ships the "data" filter (refuses the same things and strips odd mode bits);
    # it is used on top of the checks below, which give a message a person can act on.
    extra: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    size = path.stat().st_size
    bar = tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"unpack {path.name}",
        disable=not progress,
        file=sys.stderr,
    )
    with bar, open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        for member in tar:
            _check_name(member.name, path)
            if member.issym() or member.islnk():
                target = PurePosixPath(member.name).parent / member.linkname if member.issym() else None
                _check_name(member.linkname, path)
                if target is not None:
                    _check_name(str(target), path)
            elif not (member.isfile() or member.isdir()):
                raise SSMTLError(
                    f"Refusing to unpack {path}: member {member.name!r} is a device or pipe; this is not the "
                    f"official archive - delete it and rerun."
                )
            try:
                tar.extract(member, dest, **extra)
            except tarfile.FilterError as e:
                raise SSMTLError(f"Refusing to unpack {path}: {e}; delete it and rerun.") from e
            # Progress in compressed bytes read: the only total known without a second pass.
            bar.update(min(raw.tell(), size) - bar.n)
        bar.update(size - bar.n)


def _extract_zip(path: Path, dest: Path, progress: bool) -> None:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        for info in infos:  # check everything first: a zip has a central directory, so this is free
            _check_name(info.filename, path)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SSMTLError(
                    f"Refusing to unpack {path}: member {info.filename!r} is a symbolic link; "
                    f"this is not the official archive - delete it and rerun."
                )
        bar = tqdm(
            total=sum(i.file_size for i in infos),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"unpack {path.name}",
            disable=not progress,
            file=sys.stderr,
        )
        with bar:
            for info in infos:
                zf.extract(info, dest)
                bar.update(info.file_size)


# --------------------------------------------------------------------------------------------------------
# markers
# --------------------------------------------------------------------------------------------------------


def _read_marker(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None  # a damaged marker just means "redo the work"
    return data if isinstance(data, dict) else None


def _owned_targets(*markers: Path) -> set[str]:
    """Top-level names in root that earlier runs of this function created (from its marker files)."""
    owned: set[str] = set()
    for marker in markers:
        data = _read_marker(marker)
        if data:
            owned.update(str(t) for t in data.get("targets", []))
    return owned


def _remove_stale_temp(root: Path, name: str) -> None:
    # Temp folders left by a killed run are ours by name and never hold anything that was moved into place.
    for stale in root.glob(f".unpack-{name}-*"):
        if stale.is_dir():
            _say(f"Removing {stale}, left over from an interrupted unpack.")
            shutil.rmtree(stale, ignore_errors=True)
