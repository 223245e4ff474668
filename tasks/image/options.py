"""Options of the image tasks' data and devices (:mod:`tasks.image.data`, ``devices``).

Light on purpose (no torch), so ``--help`` and the checks can read it.
"""

from __future__ import annotations

from fl_core.options import OptionError, Options, Settings, group, one_of, option, positive

DATASETS = ("mnist5k", "digits", "mnist", "fashion-mnist", "cifar10", "folder")
PARTITIONS = ("iid", "dirichlet", "pathological")
IMAGE_SIZES = (28, 32, 64)
DEVICES = ("auto", "cpu", "cuda")


def _image_size(v: int) -> str | None:
    if v in IMAGE_SIZES:
        return None
    return f"must be one of {', '.join(map(str, IMAGE_SIZES))} (got {v})"


@group("Image data")
class ImageDataOptions(Options):
    """Which images the clients hold and how they are split (image tasks)."""

    dataset: str = option("mnist5k", "image data set (mnist5k and digits ship with the "
                          "packages)", check=one_of(DATASETS))
    data_dir: str = option("", "folder of --dataset mnist|fashion-mnist|cifar10|folder")
    image_size: int = option(28, "side of the square images", check=_image_size)
    partition: str = option("iid", "how training data is split across clients",
                            check=one_of(PARTITIONS))
    dirichlet_alpha: float = option(0.5, "Dirichlet concentration of --partition dirichlet "
                                    "(small = skewed)", check=positive)

    def validate(self, settings: Settings) -> None:
        """File-based data sets must exist before Ray starts (names the files)."""
        from tasks.image.data import DataError, check_source

        try:
            check_source(self.dataset, self.data_dir)
        except DataError as error:
            raise OptionError("data-dir", str(error)) from None

    def preflight(self, settings: Settings) -> None:
        """Read a file-based data set whole: any defect is refused before the run starts.

        The loader is the validator (magic numbers, counts, truncation, gzip, CIFAR-10's
        restricted unpickling, unreadable images), so nothing it would reject in a client
        can pass here. Loads are cached per process, so the in-process server of a
        simulation reuses this one.
        """
        from fl_core.federation import FederationOptions
        from tasks.image.data import NEEDS_DATA_DIR, DataError, load_images

        if self.dataset not in NEEDS_DATA_DIR:
            return
        try:
            load_images(self.dataset, self.data_dir, self.image_size,
                        settings.get(FederationOptions).seed)
        except DataError as error:
            raise OptionError("data-dir", str(error)) from None


@group("Devices")
class DeviceOptions(Options):
    """Where a task's models train (:mod:`tasks.image.devices`)."""

    device: str = option("auto", "where dcgan clients train and the server fits its public "
                         "prior (auto: a GPU when the process sees one)", check=one_of(DEVICES))
