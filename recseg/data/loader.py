"""The temporal loader: ``B`` lanes, each streaming consecutive windows of one clip.

A batch holds one window of ``T`` consecutive frames per lane. Lane ``b`` plays a clip window
after window, so a recurrent model's state for lane ``b`` may be carried (detached) from one
batch to the next; ``reset[b]`` is True exactly on a clip's first window, and the model zeroes
that lane's state before it. When a lane's clip ends, the lane that frees first takes the next
clip of the epoch's order (training: shuffled from ``(seed, epoch)``; evaluation: store order).

* Training: windows tile a clip from frame 0 in steps of ``T``; a tail shorter than ``T`` is
  dropped and a clip shorter than ``T`` is skipped. The epoch ends at the first step where a
  lane needs a clip and none is left (the other lanes' unfinished clips are dropped).
  Each clip gets one set of augmentation parameters per epoch. A clip with layers (store
  version 2) is composited on the fly (``recseg.data.composite``, ``recseg.data.layers``): its
  foreground over a background drawn afresh each epoch; a clip without (a version-1 store)
  augments its fixed composite (``recseg.data.augment``). ``augment=False`` reads the fixed
  composite as it is.
* Evaluation (``train=False``): every frame is covered exactly once; a clip's last window and
  lanes with nothing left are padded (zero frames, label ``IGNORE``, ``valid`` False).

With ``size`` set, every frame is resized to ``(h, w)`` after augmentation (which runs at the
store's size), inside the dataset and hence the loader's workers; padding has that size too.

``TemporalLoader`` is the entry point (``make_loader`` builds one). Iterating it yields the
rest of the current epoch and then advances ``epoch`` by itself: a plain
``for epoch ...: for batch in loader: ...`` loop needs no ``set_epoch`` call, and after
``load_state_dict`` the first loop finishes the saved epoch. Batches depend only on
``(seed, epoch, step)``, not on ``num_workers``, and no global random state is used.
"""

from __future__ import annotations

import collections
import math
import multiprocessing
import numbers
import signal
from collections.abc import Iterator, Sequence
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from recseg.data import augment as aug
from recseg.data.composite import CompositeParams
from recseg.data.layers import Compositor
from recseg.data.sampler import LaneSampler, Plan, Window, clip_windows
from recseg.data.store import ClipFile, ClipRecord, ClipStore
from recseg.errors import InputError

__all__ = [
    "IGNORE", "LaneSampler", "TemporalLoader", "WindowDataset", "clip_windows", "finish",
    "make_loader",
]  # fmt: skip

IGNORE = 255  # label of padded frames
_NUMPY = {torch.uint8: np.uint8, torch.float32: np.float32, torch.int64: np.int64}


class WindowDataset(Dataset[dict[str, Any]]):
    """Reads a ``Plan`` into a batch; keeps the last few clip files open (per worker).

    ``size``: the batch frame size ``(h, w)``, the store's size if None."""

    def __init__(
        self,
        store: ClipStore,
        records: Sequence[ClipRecord],
        seq_len: int,
        cache_clips: int = 4,
        size: tuple[int, int] | None = None,
    ):
        self.paths = [store.path(r) for r in records]
        self.ids = [r.id for r in records]
        self.store_size = store.size
        self.size = self.store_size if size is None else (int(size[0]), int(size[1]))
        self.seq_len = seq_len
        self.cache_clips = max(1, cache_clips)
        self._open: collections.OrderedDict[int, ClipFile] = collections.OrderedDict()
        self.compositor = Compositor(
            store.backgrounds("images"), store.backgrounds("videos"), store.size, self.cache_clips
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = collections.OrderedDict()
        return state

    def _clip(self, index: int) -> ClipFile:
        clip = self._open.get(index)
        if clip is None:
            clip = ClipFile(self.paths[index])
            if tuple(clip.shape[1:]) != self.store_size:
                raise InputError(
                    f"{clip.path}: frames are {clip.shape[1:]}, the store says {self.store_size}"
                )
            self._open[index] = clip
            while len(self._open) > self.cache_clips:
                self._open.popitem(last=False)
        self._open.move_to_end(index)
        return clip

    def _read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        clip = self._clip(win.clip)
        stop = win.start + win.length
        if stop > len(clip):
            raise InputError(f"{clip.path}: has {len(clip)} frames, fewer than the store says")
        if isinstance(win.augment, CompositeParams):
            frames, labels = self.compositor.window(win.augment, clip, win.start, stop)
        else:
            frames, labels = clip.frames(win.start, stop), clip.labels(win.start, stop)
            frames, labels = aug.apply(frames, labels, win.augment)
        return aug.resize_window(frames, labels, self.size)

    def __getitem__(self, plan: Plan) -> dict[str, Any]:
        """``plan``'s batch before :func:`finish` (a fifth of its bytes): ``frames``
        (B,T,h,w,3) and ``labels`` (B,T,h,w) uint8 tensors (padding: 0 and ``IGNORE``), in a
        worker in shared memory (sent without a copy); the small fields as numpy arrays."""
        b, t, (h, w) = len(plan), self.seq_len, self.size
        empty = _shared if get_worker_info() is not None else _host
        frames, labels = empty((b, t, h, w, 3), torch.uint8), empty((b, t, h, w), torch.uint8)
        valid = np.zeros((b, t), bool)
        for i, win in enumerate(plan):
            n = win.length
            if n:
                frames[i, :n].numpy()[:], labels[i, :n].numpy()[:] = self._read(win)
                valid[i, :n] = True
            frames[i, n:] = 0
            labels[i, n:] = IGNORE
        return {
            "frames": frames,
            "labels": labels,
            "reset": np.array([win.reset for win in plan], bool),
            "valid": valid,
            "clip": [self.ids[win.clip] if win.clip >= 0 else "" for win in plan],
            "index": np.array([win.clip for win in plan], np.int64),
            "start": np.array([win.start for win in plan], np.int64),
        }


def finish(batch: dict[str, Any], pin: bool = False) -> dict[str, Any]:
    """A read batch as the loader yields it: ``frames`` float32 (B,T,3,h,w) in [0, 1],
    ``labels`` int64, the small fields as tensors; in pinned memory when ``pin``. Converted
    with numpy on one thread: torch's intra-op threads would fight the workers for the cores."""
    frames, labels = batch["frames"].numpy(), batch["labels"].numpy()
    b, t, h, w, c = frames.shape
    x = _host((b, t, c, h, w), torch.float32, pin)
    np.divide(frames.transpose(0, 1, 4, 2, 3), np.float32(255.0), out=x.numpy())
    y = _host(labels.shape, torch.int64, pin)
    y.numpy()[:] = labels
    small = {k: torch.from_numpy(batch[k]) for k in ("reset", "valid", "index", "start")}
    if pin:
        small = {k: v.pin_memory() for k, v in small.items()}
    return {**batch, "frames": x, "labels": y, **small}


def _host(shape: tuple[int, ...], dtype: torch.dtype, pin: bool = False) -> torch.Tensor:
    """Uninitialised: pinned, or in numpy's memory (huge pages: fewer page faults than torch's)."""
    if pin:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    return torch.from_numpy(np.empty(shape, _NUMPY[dtype]))


def _shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uninitialised, in shared memory: pickling it to the main process copies nothing."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    # A grid job's stop signals go to the whole process group; only the training process acts
    # on them (checkpoint at the next step), so the workers keep loading until it is done.
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def _worker_context() -> BaseContext:
    """Where workers start: a forkserver that preloads torch, cv2 and this module (a plain fork
    of a process whose OpenCV thread pool has run can hang in the child); else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "torch", "cv2", __name__])
    return ctx


class TemporalLoader:
    """Batches of ``batch_size`` lanes x ``seq_len`` frames from one split of a clip store.

    Iterating yields the current epoch from the saved ``step`` on, then advances ``epoch`` and
    resets ``step`` (see the module doc). ``len()`` is the number of steps of the current
    epoch. ``state_dict()`` / ``load_state_dict()`` save and restore the position; ``step``
    counts batches already handed to the caller. One iteration at a time.

    ``shard=(rank, world)``: data-parallel training; each step's plan stays the global one
    (``len()``, ``epoch``, ``step`` and ``state_dict()`` are those of the unsharded loader, on
    every rank), and this loader reads only the rank's ``batch_size / world`` consecutive
    lanes of it."""

    def __init__(
        self,
        store: ClipStore | str | Path,
        split: str,
        *,
        batch_size: int,
        seq_len: int,
        seed: int = 0,
        train: bool = True,
        num_workers: int = 0,
        augment: bool | None = None,
        pin_memory: bool | None = None,
        size: tuple[int, int] | None = None,
        piece: int = 0,
        shard: tuple[int, int] = (0, 1),
    ):
        _check_positive("--batch-size", batch_size)
        rank, world = (int(v) for v in shard)
        if not 0 <= rank < world or batch_size % world:
            raise InputError(
                f"--batch-size {batch_size} is not a multiple of --nproc {world}: each "
                "process trains an equal share of the lanes"
            )
        self.shard = (rank, world)
        _check_positive("--seq-len", seq_len)
        if size is not None and not _is_size(size):
            raise InputError(f"size must be two positive integers (height, width), got {size!r}")
        if not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise InputError(f"--num-workers must be 0 or more, got {num_workers!r}")
        self.store = store if isinstance(store, ClipStore) else ClipStore(store)
        self.split = split
        records = self.store.clips(split)
        self.sampler = LaneSampler(
            [r.frames for r in records],
            batch_size,
            seq_len,
            seed=int(seed),
            train=train,
            augment=augment,
            size=self.store.size,
            layers=[r.layers for r in records],
            backgrounds=(
                len(self.store.backgrounds("images")),
                len(self.store.backgrounds("videos")),
            ),
            piece=piece,
        )
        self._check_clips(records)
        self.dataset = WindowDataset(
            self.store, records, seq_len, cache_clips=batch_size + 2, size=size
        )
        self.num_workers = int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.epoch = 0
        self.step = 0

    def _check_clips(self, records: Sequence[ClipRecord]) -> None:
        where = f"--data {self.store.root}: split {self.split!r}"
        if not records:
            raise InputError(f"{where} has no clips")
        s = self.sampler
        if s.train and len(s.usable) < s.batch_size:
            raise InputError(
                f"{where} has {len(s.usable)} clips of at least --seq-len {s.seq_len} "
                f"frames, fewer than --batch-size {s.batch_size}"
            )
        if not s.usable:
            raise InputError(f"{where} has only empty clips")

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @property
    def seq_len(self) -> int:
        return self.sampler.seq_len

    @property
    def train(self) -> bool:
        return self.sampler.train

    @property
    def size(self) -> tuple[int, int]:
        """The batch frame size ``(h, w)``."""
        return self.dataset.size

    @property
    def composites_on_the_fly(self) -> bool:
        """Whether training composites the clips' layers over fresh backgrounds (a store of
        version 2 with train backgrounds, ``train`` and ``augment`` on); False: the fixed
        composites are read (and, with ``augment``, augmented)."""
        return self.sampler.composite

    def __len__(self) -> int:
        return len(self.sampler.plans(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first step at the next iteration."""
        self.epoch, self.step = int(epoch), 0

    def _dataloader(self, plans: list[Plan]) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.dataset,
            sampler=plans,
            batch_size=None,
            collate_fn=dict,  # batches as read, numpy arrays too; finish() converts them
            num_workers=workers,
            persistent_workers=False,
            worker_init_fn=_init_worker if workers else None,
            multiprocessing_context=_worker_context() if workers else None,
            generator=torch.Generator().manual_seed(0),  # keeps torch's global RNG untouched
        )

    @property
    def lanes(self) -> slice:
        """The lanes of each step this loader reads (all but in data-parallel training)."""
        rank, world = self.shard
        n = self.batch_size // world
        return slice(rank * n, (rank + 1) * n)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        mine = self.lanes
        remaining = [plan[mine] for plan in self.sampler.plans(self.epoch)[self.step :]]
        if remaining:
            pin = self.pin_memory and torch.cuda.is_available()
            for batch in self._dataloader(remaining):
                self.step += 1
                yield finish(batch, pin)
        self.epoch, self.step = self.epoch + 1, 0

    def _identity(self) -> dict[str, Any]:
        s = self.sampler
        return {
            "split": self.split,
            "train": s.train,
            "augment": s.augment,
            "batch_size": s.batch_size,
            "seq_len": s.seq_len,
            "clips": len(s.lengths),
            "frames": sum(s.lengths),
            "size": list(self.size),
            "composite": self.composites_on_the_fly,
        }

    def state_dict(self) -> dict[str, Any]:
        """``seed``, ``epoch``, ``step`` (batches already yielded this epoch) and the settings
        that must match on load (``split``, ``train``, ``augment``, ``batch_size``,
        ``seq_len``, ``clips``, ``frames``, ``size`` as ``[h, w]``, ``composite``: whether it
        composites on the fly). Saved after an epoch's last
        batch, ``step`` equals ``len(self)``: the resumed loader's next iteration yields nothing,
        then advances."""
        return {"seed": self.seed, "epoch": self.epoch, "step": self.step, **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly after the last batch the saved loader yielded."""
        for key, value in self._identity().items():
            saved = state.get(key, value)
            if (list(saved) if isinstance(saved, tuple) else saved) != value:
                raise InputError(
                    f"cannot resume the {self.split} loader: it was saved with {key}="
                    f"{saved!r}, now {key}={value!r}"
                )
        self.sampler.seed = int(state["seed"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        if not 0 <= self.step <= len(self):
            raise InputError(f"loader state step {self.step} is outside epoch 0..{len(self)}")


def _check_positive(flag: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{flag} must be a positive integer, got {value!r}")


def _is_size(size: Any) -> bool:
    """Whether ``size`` is a ``(height, width)`` tuple or list of positive integers."""
    if not isinstance(size, tuple | list) or len(size) != 2:
        return False
    return all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size)


def make_loader(
    store: ClipStore | str | Path,
    split: str,
    *,
    size: tuple[int, int] | None = None,
    **options: Any,
) -> TemporalLoader:
    """A :class:`TemporalLoader` over ``split`` of ``store`` with batches at ``size``; ``options``
    are its other keywords (``batch_size``, ``seq_len``, ``seed``, ``train``, ...)."""
    return TemporalLoader(store, split, size=size, **options)
