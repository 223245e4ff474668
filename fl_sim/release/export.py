"""``fl_sim sample``: release synthetic data from a trained generator, with its provenance.

Why: the point of a DP-GAN is a data set others can use without touching the private
data. The release is a function of the generator alone (and of fresh noise), so it is
post-processing and inherits the generator's (epsilon, delta) at no further cost; the
metadata written beside it says which run and round it came from and that epsilon, so a
recipient can judge it without the run folder.

Two layouts:

* ``npz``: ``images`` float32 ``N x C x H x W`` in [0, 1] and, for conditional models,
  ``labels`` int64; metadata in ``<stem>.json`` beside it. Written with fixed zip
  timestamps so the same arguments give the same bytes, and streamed batch by batch so
  ``--n 100000`` never holds more than one batch of generator output in flight.
* ``png-folder``: one sub-folder of 8-bit PNGs per class (``unlabelled/`` for an
  unconditional model) plus ``release.json``: the layout ``--dataset folder`` reads, so a
  release can be trained on by fl-sim itself.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_core.atomic import write_json
from fl_core.options import UsageError

FORMATS = ("npz", "png-folder")
BATCH = 1000  # images per generator call (a multiple of 10: balanced labels); fixes the seeds
FOLDER_METADATA = "release.json"
UNLABELLED = "unlabelled"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: no wall-clock time in the file
RELEASE_FORMAT_VERSION = 1


class ExportError(UsageError):
    """Bad arguments or an unusable run folder; the message starts with the flag."""


@dataclass(frozen=True)
class Plan:
    """What ``sample`` will write, fully resolved before any image is generated."""

    run_dir: Path
    server_round: int
    n: int
    seed: int
    fmt: str
    out: Path
    metadata_path: Path
    force: bool

    @property
    def command(self) -> str:
        """The command that reproduces this release byte for byte (round made explicit)."""
        return shlex.join(["python", "-m", "fl_sim", "sample", str(self.run_dir),
                           "--n", str(self.n), "--round", str(self.server_round),
                           "--seed", str(self.seed), "--format", self.fmt,
                           "--out", str(self.out)])


def default_out(run_dir: Path, fmt: str) -> Path:
    """``RUN_DIR/synthetic.npz`` or ``RUN_DIR/synthetic/``: a release stays with its run."""
    return run_dir / ("synthetic.npz" if fmt == "npz" else "synthetic")


def batch_seed(seed: int, index: int) -> int:
    """Seed of generator batch ``index``: independent streams per batch, fixed by ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def synthesize_batches(task: Any, arrays: Any, n: int,
                       seed: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """``task.synthesize`` in batches of :data:`BATCH`, each with its own derived seed.

    The images depend on (``seed``, ``n``) only: batch ``i`` uses :func:`batch_seed`.
    """
    for index, start in enumerate(range(0, n, BATCH)):
        count = min(BATCH, n - start)
        images, labels = task.synthesize(arrays, count, batch_seed(seed, index))
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.shape[0] != count or images.ndim != 4:
            raise RuntimeError(f"synthesize returned shape {images.shape} for {count} images")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
        yield images, labels


# --- planning and validation (everything that can fail fails here, before writing) -------
def plan_release(run_dir: str | Path, n: int = 10_000, out: str | Path | None = None,
                 server_round: int | None = None, seed: int = 0, fmt: str = "npz",
                 force: bool = False) -> tuple[Plan, Any, Any]:
    """Check every argument and open the run; returns (plan, task, arrays).

    Raises
    ------
    ExportError
        Naming the flag: ``--n`` <= 0, ``--seed`` < 0, unknown ``--format``, a missing or
        non-dcgan ``RUN_DIR``, a ``--round`` without kept weights (the kept range is
        named), or an ``--out`` that exists (unless ``--force``) or cannot be written.
    """
    from fl_sim.record.run_folder import RunFolder, RunFolderError

    if n <= 0:
        raise ExportError("--n", f"must be a positive number of images, got {n}")
    if seed < 0:
        raise ExportError("--seed", f"must be >= 0, got {seed}")
    if fmt not in FORMATS:
        raise ExportError("--format", f"unknown format {fmt!r}; one of: {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    task = folder.load_task(need="synthesize")
    try:
        chosen, arrays = folder.arrays_at(server_round)
    except RunFolderError as error:
        raise ExportError("--round" if server_round is not None else "RUN_DIR",
                          error.message) from None
    out_path = Path(out) if out is not None else default_out(run_dir, fmt)
    if fmt == "npz":
        if out_path.suffix != ".npz":
            raise ExportError("--out", f"{out_path} must end in .npz for --format npz "
                                       f"(or use --format png-folder for a folder)")
        metadata_path = out_path.with_suffix(".json")
        _check_file_targets(out_path, metadata_path, force)
    else:
        metadata_path = out_path / FOLDER_METADATA
        _check_folder_target(out_path, force)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError("--out", f"cannot create {out_path.parent}: {error.strerror}") from None
    plan = Plan(run_dir, chosen, n, seed, fmt, out_path, metadata_path, force)
    return plan, task, arrays


def _check_file_targets(out: Path, metadata: Path, force: bool) -> None:
    for path in (out, metadata):
        if path.is_dir():
            raise ExportError("--out", f"{path} is a folder; give a file name ending in .npz")
        if path.exists() and not force:
            raise ExportError("--out", f"{path} already exists; choose another --out or "
                                       f"pass --force to replace it")


def _check_folder_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError("--out", f"{out} is a file; --format png-folder needs a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError("--out", f"{out} already exists and is not empty; choose "
                                       f"another --out or pass --force to replace it")
        if not (out / FOLDER_METADATA).exists():
            # --force replaces a previous release, never an arbitrary folder
            raise ExportError("--out", f"{out} is not a previous release (no "
                                       f"{FOLDER_METADATA}); --force only replaces releases")


# --- provenance ------------------------------------------------------------------------
def metadata_of(plan: Plan, task: Any, image_shape: tuple[int, ...],
                label_counts: dict[int, int] | None) -> dict[str, Any]:
    """The release's provenance and privacy: what a recipient needs without the run folder.

    ``epsilon`` is the largest per-client sample-level epsilon recorded up to the source
    round (``clients.csv``): the generator, hence the release, is (epsilon, delta)-DP
    towards every example of every client. Round 0 is the seeded initialisation, which
    read no data (epsilon 0).
    """
    from fl_sim.record.run_folder import RunFolder

    folder = RunFolder(plan.run_dir)
    config = folder.config()
    settings = config.get("settings", {})
    resolved = config.get("resolved") or {}
    dp = bool(settings.get("dp", False))
    epsilon = folder.epsilon_at(plan.server_round) if dp else None
    if dp and plan.server_round == 0:
        epsilon = 0.0
    noise = resolved.get("noise-multiplier", settings.get("noise-multiplier")) if dp else None
    meta: dict[str, Any] = {
        "release_format": RELEASE_FORMAT_VERSION,
        "run_id": config.get("run_id", plan.run_dir.name),
        "run_dir": str(plan.run_dir),
        "round": plan.server_round,
        "dp": dp,
        "epsilon": epsilon,
        "delta": settings.get("delta"),
        "accountant": settings.get("accountant") if dp else None,
        "noise_multiplier": noise,
        "max_grad_norm": settings.get("max-grad-norm") if dp else None,
        "guarantee": _guarantee(dp, epsilon),
        "seed": plan.seed,
        "n": plan.n,
        "image_shape": list(image_shape),
        "dtype": "float32" if plan.fmt == "npz" else "uint8 PNG",
        "value_range": [0.0, 1.0] if plan.fmt == "npz" else [0, 255],
        "dataset": settings.get("dataset"),
        "image_size": settings.get("image-size"),
        "conditional": bool(getattr(task, "conditional", False)),
        "num_classes": int(task.images.num_classes),
        "label_counts": ({str(k): v for k, v in sorted(label_counts.items())}
                         if label_counts is not None else None),
        "format": plan.fmt,
        "files": _files(plan, label_counts, int(task.images.num_classes)),
        "command": plan.command,
    }
    client_level = folder.epsilon_at(plan.server_round, "privacy.csv")
    if client_level is not None:
        meta["client_level_epsilon"] = client_level
    return meta


def _guarantee(dp: bool, epsilon: float | None) -> str:
    if not dp:
        return "none: the generator was trained without DP-SGD (no privacy guarantee)"
    if epsilon is None:
        return "DP-SGD run, but no epsilon was recorded up to this round (see clients.csv)"
    return ("sample-level (epsilon, delta)-DP for every example of every client's data, "
            "largest over clients; the release is post-processing of the generator")


def _files(plan: Plan, label_counts: dict[int, int] | None, num_classes: int) -> dict[str, Any]:
    if plan.fmt == "npz":
        arrays = ["images"] + (["labels"] if label_counts is not None else [])
        return {"npz": plan.out.name, "arrays": arrays}
    folders = ([class_folder(k, class_width(num_classes)) for k in sorted(label_counts)]
               if label_counts is not None else [UNLABELLED])
    return {"folders": folders, "png_names": "<global index>.png"}


# --- writing ---------------------------------------------------------------------------
def write_release(plan: Plan, task: Any, arrays: Any) -> dict[str, Any]:
    """Generate and write the release; nothing is left behind if it fails half-way."""
    writer = _write_npz if plan.fmt == "npz" else _write_folder
    shape, label_counts = writer(plan, task, arrays)
    meta = metadata_of(plan, task, shape, label_counts)
    write_json(plan.metadata_path, meta, sort_keys=False)
    return meta


def _write_npz(plan: Plan, task: Any, arrays: Any) -> tuple[tuple[int, ...], dict | None]:
    """Stream ``images.npy`` (and ``labels.npy``) into a deterministic compressed zip."""
    from numpy.lib import format as npy

    tmp = plan.out.with_name(plan.out.name + ".tmp")
    labels: list[np.ndarray] = []
    shape: tuple[int, ...] = ()
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            batches = synthesize_batches(task, arrays, plan.n, plan.seed)
            first, first_labels = next(batches)
            shape = tuple(first.shape[1:])
            with archive.open(_entry("images.npy"), "w", force_zip64=True) as handle:
                npy.write_array_header_1_0(handle, {
                    "descr": npy.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                    "shape": (plan.n, *shape)})
                for images, batch_labels in _chain(first, first_labels, batches):
                    if tuple(images.shape[1:]) != shape:
                        raise RuntimeError("synthesize changed the image shape between batches")
                    handle.write(images.astype("<f4", copy=False).tobytes())
                    if batch_labels is not None:
                        labels.append(batch_labels)
            if labels:
                with archive.open(_entry("labels.npy"), "w", force_zip64=True) as handle:
                    npy.write_array(handle, np.concatenate(labels).astype("<i8"),
                                    allow_pickle=False)
        tmp.replace(plan.out)
    finally:
        tmp.unlink(missing_ok=True)
    return shape, _counts(np.concatenate(labels)) if labels else None


def _write_folder(plan: Plan, task: Any, arrays: Any) -> tuple[tuple[int, ...], dict | None]:
    """One PNG per image under ``<class>/``, built in a sibling folder, then moved in place."""
    tmp = plan.out.with_name(f".{plan.out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from an interrupted export
    digits = max(6, len(str(plan.n - 1)))
    width = class_width(int(task.images.num_classes))
    counts: dict[int, int] = {}
    shape: tuple[int, ...] = ()
    index = 0
    try:
        tmp.mkdir(parents=True)
        for images, labels in synthesize_batches(task, arrays, plan.n, plan.seed):
            shape = tuple(images.shape[1:])
            for row, image in enumerate(images):
                label = None if labels is None else int(labels[row])
                folder = tmp / (UNLABELLED if label is None else class_folder(label, width))
                folder.mkdir(exist_ok=True)
                _save_png(image, folder / f"{index:0{digits}d}.png")
                if label is not None:
                    counts[label] = counts.get(label, 0) + 1
                index += 1
        if plan.out.exists():  # empty, or a previous release that --force replaces
            shutil.rmtree(plan.out)
        tmp.rename(plan.out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    label_counts = counts if counts else None
    if label_counts is not None:
        missing = sorted(set(range(int(task.images.num_classes))) - set(counts))
        if missing:
            print(f"fl_sim: warning: no images of class(es) {missing} (--n {plan.n} is too "
                  "small); `--dataset folder` numbers the class folders it finds in order",
                  file=sys.stderr)
    return shape, label_counts


def class_folder(label: int, width: int) -> str:
    """Zero-padded class folder name, so sorted folder order is label order (10 before 2)."""
    return f"{label:0{width}d}"


def class_width(num_classes: int) -> int:
    """Digits of the largest class index: ``0``..``9`` for 10 classes, ``00``..``99`` for 100."""
    return len(str(max(num_classes - 1, 0)))


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if pixels.shape[0] == 1:
        Image.fromarray(pixels[0], mode="L").save(path, format="PNG")
    elif pixels.shape[0] == 3:
        Image.fromarray(pixels.transpose(1, 2, 0), mode="RGB").save(path, format="PNG")
    else:
        raise RuntimeError(f"cannot write {pixels.shape[0]}-channel images as PNG")


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _chain(first: np.ndarray, first_labels: np.ndarray | None,
           rest: Iterator) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    yield first, first_labels
    yield from rest


def _counts(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def sample(run_dir: str | Path, n: int = 10_000, out: str | Path | None = None,
           server_round: int | None = None, seed: int = 0, fmt: str = "npz",
           force: bool = False) -> dict[str, Any]:
    """Plan, check and write a release; returns its metadata (also written as JSON)."""
    plan, task, arrays = plan_release(run_dir, n, out, server_round, seed, fmt, force)
    return write_release(plan, task, arrays)


def summary_line(meta: dict[str, Any], out: Path, metadata: Path) -> str:
    """One line for the terminal: what was written, from where, at what epsilon."""
    eps = ("no DP" if not meta["dp"] else
           f"epsilon {meta['epsilon']:.3g} at delta {meta['delta']:g}"
           if meta["epsilon"] is not None else "epsilon unknown")
    shape = "x".join(map(str, meta["image_shape"]))
    return (f"wrote {meta['n']} images ({shape}) from round {meta['round']} of "
            f"{meta['run_id']} ({eps}) to {out}; metadata: {metadata}")
