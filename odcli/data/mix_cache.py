"""The image cache of RTMDet's mixing transforms (cached Mosaic and MixUp), and its non-cached stand-in.

**The cache** (RTMDet's speed-up over YOLOv5-style mixing): every call first *adds the incoming
sample* to a bounded cache, evicting one entry when it holds more than ``max_cached_images`` — a
random one (``random_pop=True``) or the oldest (``random_pop=False``, RTMDet-tiny, for steadier
training). The partner images are then drawn (with replacement) from the cache, so one call reads
exactly one image from disk — the incoming one, read by the dataset — instead of 4 (Mosaic) or 2
(MixUp). Like upstream, the sample passes through unchanged while the cache holds <= 4 (Mosaic) or
<= 1 (MixUp) samples, and the incoming sample itself may be drawn as its own partner.

The cache lives in the transform object, so each DataLoader worker (which holds its own copy of the
dataset and its transforms) has its own cache, filled only by the samples that worker produced.
Augmentation is therefore reproducible for a given seed *and* number of workers, not across worker
counts. The cache stores the sample dicts themselves — no deep copies: the image array is shared
(every transform in this package returns new arrays and never writes to its input; the cached entry
holds a read-only view so an accidental write through it fails loudly), and boxes/labels are copied
(a few bytes) so a batch's target tensors never alias a cached entry.

``use_cache=False`` gives the classic variants for comparison (``bench/augment.py``): the partners are
loaded through a :data:`PartnerSource` (e.g. :class:`DatasetPartners`), i.e. read and decoded from
disk on every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from odcli.data.sample import Sample, replace_sample
from odcli.errors import OdetError

__all__ = ["CachedMixing", "DatasetPartners", "PartnerSource", "SampleCache", "cached_transforms"]

PartnerSource = Callable[[np.random.Generator], Sample]
"""Loads one random partner sample (untransformed, straight from the dataset): ``rng -> sample``."""


class SampleCache:
    """A bounded list of samples with FIFO or random eviction (the cache of RTMDet's mixing transforms).

    Entries are shallow copies of the added samples: the image is shared through a read-only view,
    boxes and labels are copied.
    """

    def __init__(self, max_size: int, random_pop: bool) -> None:
        """Args: max_size: entries kept after each :meth:`add`; random_pop: evict a random entry
        (True) or the oldest one (False) when full."""
        self.max_size = int(max_size)
        self.random_pop = bool(random_pop)
        self.entries: list[Sample] = []

    def add(self, sample: Sample, rng: np.random.Generator) -> None:
        """Append ``sample``; if that makes the cache exceed ``max_size``, evict one entry (possibly
        the one just added, when ``random_pop``, exactly as upstream)."""
        img = sample["img"].view()
        img.flags.writeable = False
        self.entries.append(
            replace_sample(sample, img=img, boxes=sample["boxes"].copy(), labels=sample["labels"].copy())
        )
        if len(self.entries) > self.max_size:
            index = int(rng.integers(0, len(self.entries))) if self.random_pop else 0
            del self.entries[index]

    def pick(self, rng: np.random.Generator) -> Sample:
        """A uniformly random entry (not removed)."""
        return self.entries[int(rng.integers(0, len(self.entries)))]

    def clear(self) -> None:
        """Drop every entry (frees the images)."""
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)


class DatasetPartners:
    """A :data:`PartnerSource` over a dataset with ``load_raw(i)``: a uniformly random image, read and
    decoded from disk on each call (what the non-cached Mosaic/MixUp cost)."""

    def __init__(self, dataset: Any) -> None:
        """Args: dataset: e.g. :class:`~odcli.data.coco.CocoDetection` (``len`` and ``load_raw``)."""
        self.dataset = dataset

    def __call__(self, rng: np.random.Generator) -> Sample:
        """A random raw sample of the dataset."""
        return self.dataset.load_raw(int(rng.integers(0, len(self.dataset))))


class CachedMixing:
    """What :class:`~odcli.data.mix.CachedMosaic` and :class:`~odcli.data.mix.CachedMixUp` share: the
    sample cache, or the partner loader that replaces it with ``use_cache=False``. Subclasses set the
    three class attributes below and call :meth:`_setup_partners` from ``__init__``."""

    name: str  # "Mosaic" / "MixUp", for messages
    min_cached: int  # smallest allowed cache
    warm_size: int  # the incoming sample passes through while the cache holds this many or fewer

    def _setup_partners(
        self, max_cached_images: int, random_pop: bool, use_cache: bool, partner_source: PartnerSource | None
    ) -> None:
        """Check the cache settings and create the cache (or keep the partner loader)."""
        if max_cached_images < self.min_cached:
            raise OdetError(
                f"{self.name.lower()} cache size must be >= {self.min_cached} images, got {max_cached_images}"
            )
        self.use_cache = bool(use_cache)
        if not self.use_cache and partner_source is None:
            raise OdetError(
                f"Cached{self.name}(use_cache=False) needs a partner_source to load partner images"
            )
        self.partner_source = partner_source
        self.cache = SampleCache(max_cached_images, random_pop)

    @property
    def max_cached_images(self) -> int:
        """Entries the cache keeps."""
        return self.cache.max_size

    @property
    def random_pop(self) -> bool:
        """Evict a random entry (True) or the oldest (False)."""
        return self.cache.random_pop

    def clear_cache(self) -> None:
        """Empty the cache (the pipeline switch calls it once this stage is no longer used)."""
        self.cache.clear()

    def _admit(self, sample: Sample, rng: np.random.Generator) -> bool:
        """Cache ``sample``; False while the cache is still too cold to mix (upstream passes it through)."""
        if not self.use_cache:
            return True
        self.cache.add(sample, rng)
        return len(self.cache) > self.warm_size

    def _draw_partner(self, rng: np.random.Generator) -> Sample:
        """One random partner: from the cache (with replacement), or loaded by ``partner_source``."""
        if self.use_cache:
            return self.cache.pick(rng)
        assert self.partner_source is not None
        return self.partner_source(rng)


def cached_transforms(transform: Any) -> list[Any]:
    """The transforms with a cache (``clear_cache``) inside ``transform`` (a Compose or a single one)."""
    inner = getattr(transform, "transforms", [transform])
    return [t for t in inner if hasattr(t, "clear_cache")]
