"""Options of the disguise task (:mod:`tasks.disguise.task`); light, for ``--help``."""

from __future__ import annotations

from pathlib import Path

from fl_core.options import OptionError, Options, Settings, at_least, group, option


class MappingError(ValueError):
    """``--hide``/``--decoy`` are not a valid mapping; ``key`` names the culprit."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def parse_mapping(hide: str, decoy: str, num_classes: int) -> tuple[tuple[int, ...],
                                                                     tuple[int, ...]]:
    """Parse ``"0,1"`` and ``"2,3"`` into the class mapping hide[k] -> decoy[k].

    Raises
    ------
    MappingError
        If a list is empty or not integers, repeats a class, names a class outside
        ``0..num_classes-1``, the lists differ in length, or they share a class.
    """
    parsed = {}
    for key, text in (("hide", hide), ("decoy", decoy)):
        try:
            values = tuple(int(part) for part in str(text).split(","))
        except ValueError:
            raise MappingError(key, f"expected comma-separated class numbers, got {text!r}"
                               ) from None
        unknown = [v for v in values if not 0 <= v < num_classes]
        if unknown:
            raise MappingError(key, f"unknown classes {unknown}; the data set has classes "
                                    f"0..{num_classes - 1}")
        if len(set(values)) != len(values):
            raise MappingError(key, f"repeats a class: {text!r}")
        parsed[key] = values
    if len(parsed["hide"]) != len(parsed["decoy"]):
        raise MappingError("decoy", f"needs as many classes as --hide ({len(parsed['hide'])}), "
                                    f"got {len(parsed['decoy'])}")
    shared = sorted(set(parsed["hide"]) & set(parsed["decoy"]))
    if shared:
        raise MappingError("decoy", f"must be disjoint from --hide; both contain {shared}")
    return parsed["hide"], parsed["decoy"]


def dataset_classes(dataset: str, data_dir: str) -> int:
    """Number of classes of ``dataset`` without loading it (10 unless a class folder)."""
    if dataset == "folder":
        from tasks.image.data import folder_classes

        return len(folder_classes(Path(data_dir)))
    return 10


@group("Disguise task")
class DisguiseOptions(Options):
    """Which classes are hidden behind which decoys, and the translator's budget."""

    hide: str = option("0,1", "disguise task: comma-separated hidden classes (e.g. 0,1)")
    decoy: str = option("2,3", "disguise task: decoy classes, one per hidden class, "
                        "disjoint from --hide")
    translator_steps: int = option(600, "disguise task: translation-GAN updates on the data "
                                   "owner's side", check=at_least(1))

    def validate(self, settings: Settings) -> None:
        """``--hide``/``--decoy``: equal-length, disjoint lists of the data set's classes."""
        if settings.task != "disguise":
            return
        from tasks.image.options import ImageDataOptions

        image = settings.get(ImageDataOptions)
        try:
            parse_mapping(self.hide, self.decoy, dataset_classes(image.dataset, image.data_dir))
        except MappingError as error:
            raise OptionError(error.key, str(error)) from None
