"""Video and image pipelines for BEVT: frame sampling, the official transforms, the datasets that turn records into
samples, and the loaders. readers.py holds the records and the annotation formats; readers.py decodes files into
frames. (The synthetic set that needs no download is synthetic.py.)

Paper: BEVT §4.1 (K400, SSv2, Diving-48, ImageNet-1K). The pipelines follow the official configs under
configs/recognition/swin/: swin_base_patch244_window877_bevt_in1k_k400.py (pretraining), ..._bevt_finetune_k400.py
and ..._window1677_bevt_finetune_ssv2.py (finetuning). Pretraining samples are uint8; `normalize_batch` runs on the
device.
"""
import math
import multiprocessing
import signal
import warnings

import av
import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision.transforms import v2

import readers
from masking import blockwise_mask, video_mask

cv2.setNumThreads(1)  # DataLoader workers are the parallelism; OpenCV would start a thread per core in every worker

# official: img_norm_cfg, swin_base_patch244_window877_bevt_in1k_k400.py:38-39 (the same in the finetune cfgs)
MEAN = torch.tensor([123.675, 116.28, 103.53])
STD = torch.tensor([58.395, 57.12, 57.375])
MAX_RETRIES = 10  # a bad sample is replaced at most this many times in a row before we give up loudly


# --------------------------------------------------------------------------- frame sampling (pure functions)
def dense_indices(num_frames, clip_len, frame_interval, num_clips, train, rng) -> np.ndarray:
    """(num_clips, clip_len) frame indices; official: mmaction SampleFrames (random offset in train, evenly spaced
    clip centres at test, out-of-range indices loop: np.mod)."""
    span = clip_len * frame_interval
    if train:
        room = (num_frames - span + 1) // num_clips
        if room > 0:
            offsets = np.arange(num_clips) * room + rng.integers(0, room, size=num_clips)
        elif num_frames > max(num_clips, span):
            offsets = np.sort(rng.integers(0, num_frames - span + 1, size=num_clips))
        else:  # short video: clips start at (about) 0 and loop
            offsets = np.around(np.arange(num_clips) * max(num_frames - span + 1, 0) / num_clips).astype(np.int64)
    else:
        step = max(num_frames - span + 1, 0) / num_clips  # a short video: every clip starts at 0
        offsets = (np.arange(num_clips) * step + step / 2).astype(np.int64)
    return np.mod(offsets[:, None] + np.arange(clip_len)[None] * frame_interval, num_frames)  # (num_clips, clip_len)


def uniform_indices(num_frames, clip_len, train, rng) -> np.ndarray:
    """(clip_len,) one frame per segment; official: Video Swin SampleFrames(frame_uniform=True): segment bounds
    round((n-1)/clip_len * i), a random frame in [start, end] (both inclusive) in train, the middle at test."""
    bounds = np.round((num_frames - 1) / clip_len * np.arange(clip_len + 1)).astype(np.int64)
    starts, ends = bounds[:-1], bounds[1:]
    return rng.integers(starts, ends + 1) if train else (starts + ends) // 2


# --------------------------------------------------------------------------- transforms on uint8 (T, H, W, 3) frames
# The official pipelines work on lists of HWC uint8 numpy frames with mmcv, whose resizes are cv2.resize; so do we.
def resize(frames, width, height, interpolation=cv2.INTER_LINEAR):
    """mmcv.imresize(frame, (width, height)) = cv2.resize of every frame (official Resize default: bilinear)."""
    return np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interpolation) for f in frames])


def resize_short(frames, short, interpolation=cv2.INTER_LINEAR):
    """official: Resize(scale=(-1, short)) (augmentations.py:1135-1149, :1186), the size by mmcv.rescale_size:
    int(w * s + 0.5) x int(h * s + 0.5) with s = short / min(h, w)."""
    h, w = frames.shape[1:3]
    scale = short / min(h, w)
    return resize(frames, int(w * scale + 0.5), int(h * scale + 0.5), interpolation)


def random_crop(frames, crop, rng):
    h, w = frames.shape[1:3]
    top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    return frames[:, top:top + crop, left:left + crop]


def random_resized_crop(frames, crop, rng, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """official: RandomResizedCrop (augmentations.py:792-840: 10 tries, else the centre square) then
    Resize(scale=(crop, crop), keep_ratio=False), bilinear."""
    h, w = frames.shape[1:3]
    for _ in range(10):
        target, aspect = rng.uniform(*area) * h * w, math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_h, crop_w = round(math.sqrt(target / aspect)), round(math.sqrt(target * aspect))
        if crop_h <= h and crop_w <= w:
            top, left = rng.integers(0, h - crop_h + 1), rng.integers(0, w - crop_w + 1)
            break
    else:
        crop_h = crop_w = min(h, w)
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return resize(frames[:, top:top + crop_h, left:left + crop_w], crop, crop)


def fixed_crop(frames, crop, position, num_crops):
    """Centre crop (num_crops == 1, official CenterCrop) or crop `position` of three along the long side (official:
    ThreeCrop, augmentations.py:1814-1838, offsets position * ((long - crop) // 2))."""
    h, w = frames.shape[1:3]
    top, left = (h - crop) // 2, (w - crop) // 2
    if num_crops == 3:
        top, left = (position * ((h - crop) // 2), left) if h > w else (top, position * ((w - crop) // 2))
    return frames[:, top:top + crop, left:left + crop]


def to_clip(frames) -> torch.Tensor:
    """uint8 numpy (T, H, W, 3) -> uint8 tensor (3, T, H, W), the layout the model reads."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).contiguous()  # (3, T, H, W)


def color_jitter(image, strength, order, rng):
    """official: ColorJitter(0.4, 0.4, 0.4, hue=0) of the image pipeline (augmentations.py:1561-1670): brightness,
    contrast, saturation factors ~ U(1-s, 1+s) applied in `order` to the float32 image, clipped and truncated to
    uint8 once at the end. uint8 (H, W, 3) -> uint8 (H, W, 3). Scalars are cast as NumPy 1.x cast them for the
    official code (NumPy 2 would compute the contrast offset in float32): the official result bit for bit."""
    grey = lambda x: np.float32(0.2989) * x[..., 0] + np.float32(0.587) * x[..., 1] + np.float32(0.114) * x[..., 2]
    factors = rng.uniform(1 - strength, 1 + strength, size=3).tolist()
    x = image.astype(np.float32)  # (H, W, 3)
    for op in order:  # grey: rgb_to_grayscale, augmentations.py:1589-1591
        factor = factors[op]
        if op == 0:  # brightness: img *= b
            x = x * np.float32(factor)
        elif op == 1:  # contrast: blend with the mean grey level of the image
            x = np.float32(factor) * x + np.float32((1 - factor) * np.float64(np.mean(grey(x))))
        else:  # saturation: blend with the image's own grey
            x = np.float32(factor) * x + np.float32(1 - factor) * grey(x)[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)


def random_erase(x, rng, area=(0.02, 1 / 3), min_aspect=0.3):
    """official: RandomErasing(probability=0.25) after Normalize in the SSv2 finetune cfg (..._ssv2.py:23-24), which
    is timm's RandomErasing with its defaults (timm/data/random_erasing.py: mode 'const', one box): a box of zeros,
    the mean colour after normalisation; augmentations.py:476-484 replays the RNG per frame, so every frame gets the
    same box. x (3, T, H, W) float, erased in place; the caller draws the probability."""
    h, w = x.shape[-2:]
    for _ in range(10):
        target = rng.uniform(*area) * h * w
        aspect = math.exp(rng.uniform(math.log(min_aspect), math.log(1 / min_aspect)))
        box_h, box_w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if box_h < h and box_w < w:
            top, left = rng.integers(0, h - box_h + 1), rng.integers(0, w - box_w + 1)
            x[..., top:top + box_h, left:left + box_w] = 0
            break
    return x


def view_frames(frames):
    """uint8 (T, H, W, 3) crops -> (T, H/2, W/2, 3) tokenizer views. BEVT §3 "Tokenizer": frames are downsampled by
    1/2; official: CopyResize(scale=(112, 112), 'lanczos'), augmentations.py:1430-1456, is mmcv.imresize =
    cv2.resize(INTER_LANCZOS4) on the uint8 crop. We call OpenCV itself: its uint8 Lanczos sums 11-bit fixed-point
    weights in integers, which a float resize does not reproduce (one grey level off on some pixels)."""
    T, H, W, C = frames.shape
    if frames.dtype != np.uint8 or C != 3 or H % 2 or W % 2:
        raise ValueError(f"a tokenizer view needs uint8 crops with 3 channels, H and W even; got {frames.dtype} "
                         f"(H, W, C) = {(H, W, C)}")
    return resize(frames, W // 2, H // 2, cv2.INTER_LANCZOS4)


def tokenizer_view(crops):
    """The same for torch crops (CPU): uint8 (..., 3, H, W) -> uint8 (..., 3, H/2, W/2)."""
    *lead, C, H, W = crops.shape
    if crops.dtype != torch.uint8:
        raise ValueError(f"tokenizer_view needs uint8 crops, got {crops.dtype}")
    views = view_frames(crops.reshape(-1, C, H, W).permute(0, 2, 3, 1).numpy())  # (N, H/2, W/2, 3)
    return torch.from_numpy(views).permute(0, 3, 1, 2).reshape(*lead, C, H // 2, W // 2)  # (..., 3, H/2, W/2)


def normalize_batch(x):
    """uint8 (B, 3, ...) on any device -> float32 (x - mean) / std, the official Normalize (mmcv.imnormalize_,
    augmentations.py:1517), bit for bit on every uint8 level."""
    shape = (1, 3) + (1,) * (x.dim() - 2)
    return (x.float() - MEAN.to(x.device).view(shape)) / STD.to(x.device).view(shape)


# --------------------------------------------------------------------------- datasets
class _Base(Dataset):
    """Per-sample rng from (seed, epoch, index) and bounded replacement of unreadable samples."""

    def __init__(self, records, seed, crop, short_side=math.inf):
        if short_side < crop:
            raise ValueError(f"the rescaled short side {short_side} is smaller than the crop {crop}")
        self.records, self.seed, self.crop, self.epoch, self.views, self.replace = records, seed, crop, 0, 1, True
        self._bad = multiprocessing.Value("i", 0)  # shared with DataLoader workers

    def __len__(self):
        return len(self.records) * self.views

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def num_bad(self) -> int:
        """Samples replaced (train) or blanked (test) because their file could not be read, over all workers."""
        return self._bad.value

    def __getitem__(self, index):
        """self._load(index, rng), rng from (seed, epoch, index); an unreadable sample is replaced by a random other
        one, or where replacing is off (test views) self._blank(index)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for _ in range(MAX_RETRIES + 1):
            try:
                return self._load(index, rng)
            except (OSError, av.FFmpegError, readers.MediaError) as err:  # only I/O problems; code errors propagate
                path = self.records[index // self.views].path
                action = "replaced by another" if self.replace else "blanked"
                warnings.warn(f"unreadable sample {path}: {err}; {action}")
                with self._bad.get_lock():
                    self._bad.value += 1
                if not self.replace:
                    return self._blank(index)
                index = int(rng.integers(len(self)))
        raise RuntimeError(f"{MAX_RETRIES + 1} unreadable samples in a row (last {path}); run "
                           f"`python -m tools.dataset check`")


def pretrain_crop(frames, crop, rescale, rng, jitter=lambda frames: frames):
    """The pretraining augmentation (official cfg in1k_k400.py:44-46, :60-63): RandomRescale, short side ~ U{rescale}
    bicubic, (images: ColorJitter), random crop, flip with p = 0.5. (T, H, W, 3) -> (T, crop, crop, 3) uint8."""
    frames = jitter(resize_short(frames, int(rng.integers(rescale[0], rescale[1] + 1)), cv2.INTER_CUBIC))
    frames = random_crop(frames, crop, rng)
    return frames[:, :, ::-1] if rng.random() < 0.5 else frames


class PretrainVideoDataset(_Base):
    """BEVT §4.1 video stream (official cfg in1k_k400.py:40-57): SampleFrames 16x8, the pretraining crop, and a tube
    mask on the T/patch_t temporal tokens. Returns uint8 clips; the engine normalises them on the device."""

    def __init__(self, records, clip_len=16, frame_interval=8, crop=224, rescale=(256, 320), mask_strategy="tube",
                 tube_range=(0.5, 1.0), mask_ratio=0.5, patch_t=2, seed=0):
        super().__init__(records, seed, crop, rescale[0])
        self.clip_len, self.frame_interval, self.rescale, self.patch_t = clip_len, frame_interval, rescale, patch_t
        self.mask_strategy, self.tube_range, self.mask_ratio = mask_strategy, tube_range, mask_ratio

    def _load(self, index, rng):
        frames = readers.read_segment(
            self.records[index], lambda n: dense_indices(n, self.clip_len, self.frame_interval, 1, True, rng)[0])
        frames = pretrain_crop(frames, self.crop, self.rescale, rng)  # (T, crop, crop, 3)
        grid = self.crop // 16  # BEVT §3 "Mask strategy": masks live on the 14x14 (224/16) token grid
        mask = video_mask(self.mask_strategy, self.clip_len // self.patch_t, grid, grid, self.mask_ratio,
                          self.tube_range, rng=rng)
        return {"video": to_clip(frames), "video_tok": to_clip(view_frames(frames)),  # (3, T, H, W), (3, T, H/2, W/2)
                "video_mask": torch.from_numpy(mask)}  # (T/patch_t, H/16, W/16), True = masked


class PretrainImageDataset(_Base):
    """Image stream (official cfg in1k_k400.py:58-73): rescale, ColorJitter 0.4/0.4/0.4 on the whole rescaled image,
    crop, flip; a blockwise mask of int(mask_ratio * 14 * 14) = 98 cells. Returns uint8 images."""

    def __init__(self, records, crop=224, rescale=(256, 320), jitter=0.4, mask_ratio=0.5, seed=0):
        super().__init__(records, seed, crop, rescale[0])
        self.rescale, self.jitter, self.mask_ratio = rescale, jitter, mask_ratio
        # official: the op order is permuted once at construction (augmentations.py:1616, hue is a 4th op that
        # hue=0 skips, so the three others come in a uniformly random order, as here)
        self.order = np.random.default_rng([seed]).permutation(3)

    def _load(self, index, rng):
        frames = readers.read_image(self.records[index].path).permute(1, 2, 0).numpy()[None]  # (1, H, W, 3)
        def jitter(frames):  # ColorJitter on the whole rescaled image (1, H, W, 3)
            return color_jitter(frames[0], self.jitter, self.order, rng)[None]
        frames = pretrain_crop(frames, self.crop, self.rescale, rng, jitter)  # (1, crop, crop, 3)
        grid = self.crop // 16
        mask = blockwise_mask(grid, grid, int(self.mask_ratio * grid * grid), rng=rng)
        return {"image": to_clip(frames)[:, 0],  # (3, H, W) uint8
                "image_tok": to_clip(view_frames(frames))[:, 0],  # (3, H/2, W/2) uint8
                "image_mask": torch.from_numpy(mask)}  # (H/16, W/16), True = masked


class FinetuneVideoDataset(_Base):
    """Finetuning/testing, float32 normalised clips (3, T, H, W). Train (official finetune cfgs, k400.py:15-27,
    ssv2.py:14-28): short side 256 -> RandomResizedCrop -> crop x crop -> flip (K400; none for SSv2) ->
    RandAugment(n, m) on all frames alike -> Normalize -> random erasing. Test: short side 224, centre or three crops,
    num_clips clips; indexed by (video, clip, crop) views."""

    def __init__(self, records, train, sampling="dense", clip_len=32, frame_interval=2, num_clips=1, num_crops=1,
                 crop=224, short_side=None, flip=True, randaugment=None, erase_prob=0.0, area=(0.08, 1.0), seed=0):
        super().__init__(records, seed, crop)
        if sampling not in ("dense", "uniform") or num_crops not in (1, 3) or sampling == "uniform" and num_clips != 1:
            raise ValueError("sampling must be dense|uniform (uniform has one clip), num_crops 1 or 3")
        self.train, self.sampling, self.clip_len, self.frame_interval = train, sampling, clip_len, frame_interval
        self.num_clips, self.num_crops = (1, 1) if train else (num_clips, num_crops)  # training takes one view
        self.views, self.flip, self.replace = self.num_clips * self.num_crops, flip, train
        self.short_side = short_side or (256 if train else 224)
        self.randaugment = v2.RandAugment(*randaugment) if randaugment else None  # (num_ops, magnitude)
        self.erase_prob, self.area = erase_prob, area  # area: RandomResizedCrop's range; official: (0.08, 1.0)

    def _blank(self, index):
        """A test view of an unreadable video: a blank clip keeps every video's views in place."""
        video_index = index // self.views
        blank = torch.zeros(3, self.clip_len, self.crop, self.crop)
        return {"video": blank, "label": self.records[video_index].label, "video_index": video_index,
                "unreadable": True}

    def _load(self, index, rng):
        video_index, view = divmod(index, self.views)
        clip_index, position = divmod(view, self.num_crops)
        record = self.records[video_index]
        def pick(num_frames):
            if self.sampling == "uniform":
                return uniform_indices(num_frames, self.clip_len, self.train, rng)
            clips = dense_indices(num_frames, self.clip_len, self.frame_interval, self.num_clips, self.train, rng)
            return clips[clip_index]  # (clip_len,)
        frames = resize_short(readers.read_segment(record, pick), self.short_side)  # (T, H, W, 3)
        if not self.train:
            clip = to_clip(fixed_crop(frames, self.crop, position, self.num_crops))  # (3, T, crop, crop)
            return {"video": normalize_batch(clip[None])[0], "label": record.label, "video_index": video_index,
                    "unreadable": False}
        frames = random_resized_crop(frames, self.crop, rng, self.area)
        clip = to_clip(frames[:, :, ::-1] if self.flip and rng.random() < 0.5 else frames)  # (3, T, crop, crop)
        if self.randaugment is not None:  # torchvision draws from torch's RNG: seed it from ours, then restore it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                clip = self.randaugment(clip.transpose(0, 1)).transpose(0, 1)  # one draw of ops, on every frame
        clip = normalize_batch(clip[None])[0]  # (3, T, H, W) float32
        if rng.random() < self.erase_prob:
            clip = random_erase(clip, rng)
        return {"video": clip, "label": record.label, "index": video_index}


# --------------------------------------------------------------------------- loaders
class TrainOrder(Sampler):
    """(epoch, index) pairs: the DistributedSampler order for (seed, epoch) on this rank from batch `start_batch` on
    (exact resume). make_loader re-aims it at each epoch."""

    def __init__(self, dataset, batch_size, seed, world, rank):
        self.shuffle = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.epoch, self.start_batch = batch_size, 0, 0

    def __len__(self):
        return max(0, len(self.shuffle) - self.start_batch * self.batch_size)

    def __iter__(self):
        self.shuffle.set_epoch(self.epoch)
        return iter([(self.epoch, index) for index in list(self.shuffle)[self.start_batch * self.batch_size:]])


class AtEpoch(Dataset):
    """dataset[index] at an epoch, for (epoch, index) items: a persistent worker's copy of the dataset never sees the
    main process's set_epoch, so the epoch travels with each index and the worker sets it on its copy."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        epoch, index = item
        self.dataset.set_epoch(epoch)
        return self.dataset[index]



def ignore_stop_signals(worker_id):
    """DataLoader workers leave SIGINT / SIGTERM / SIGUSR1 to the main process, which stops at a step boundary and
    ends them (run.Progress); a worker killed by Ctrl-C would end the run with its traceback instead."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_IGN)


def make_loader(dataset, batch_size, train, num_workers, seed, distributed, epoch=0, start_batch=0) -> DataLoader:
    """Train: batches of the TrainOrder for (seed, epoch) from batch `start_batch` on, drop_last, persistent workers
    (aim_loader re-aims the same loader at another epoch); the dataset (with set_epoch) draws each sample's randomness
    from (seed, epoch, index), so nothing depends on the worker count. Eval: rank r takes samples r, r + world, ...
    (no padding, no duplicates, the last batch uneven)."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    # a private generator (it only seeds the workers): creating a loader must not advance the global torch RNG (drop
    # path), or a resumed run, which creates its loaders at another point of that stream, would diverge
    settings = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(), drop_last=train,
                    generator=torch.Generator().manual_seed(seed), worker_init_fn=ignore_stop_signals)
    if not train:
        return DataLoader(dataset, batch_size, sampler=range(rank, len(dataset), world), **settings)
    order = TrainOrder(dataset, batch_size, seed, world, rank)
    loader = DataLoader(AtEpoch(dataset), batch_size, sampler=order, persistent_workers=num_workers > 0, **settings)
    return aim_loader(loader, epoch, start_batch)


def aim_loader(loader, epoch, start_batch=0):
    """A training loader's next pass: the samples of `epoch` from batch `start_batch` on (its workers stay)."""
    loader.sampler.epoch, loader.sampler.start_batch = epoch, start_batch
    return loader


def cycled_batches(dataset, batch_size, num_workers, seed, distributed, position):
    """The joint stage's image stream, cycled beside the video epochs (official: RepeatDataset, in1k_k400.py:86-95),
    a new shuffle each time it runs out. `position` {"epoch", "batch"} is advanced in place as batches are handed
    out, so a checkpoint can store it and a resumed run continues with the same images."""
    loader = make_loader(dataset, batch_size, True, num_workers, seed, distributed)
    while True:
        for batch in aim_loader(loader, position["epoch"], position["batch"]):
            position["batch"] += 1
            yield batch
        position["epoch"], position["batch"] = position["epoch"] + 1, 0


# --------------------------------------------------------------------------- the datasets and batches of a run
def read_dataset(annotation, root, flags, classes=None, kind=None):
    """(records, class names): readers.read_annotations (labels indexed by the training `classes` if given), or
    with `kind` ("video" / "image", pretraining) readers.read_unlabelled and no class names. Their errors (a
    missing file, a malformed line, an unseen label, an empty set) end the run naming the flags."""
    try:
        if kind is not None:
            return readers.read_unlabelled(annotation, root, kind), []
        return readers.read_annotations(annotation, root, classes)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{flags}: {e}") from None


def step_counts(dataset, batch_size, cfg, env):
    """(optimizer steps per epoch, steps of the whole schedule, the step this run stops at: --max-steps). Every rank
    must hold the same dataset length (the scripts check it: each rank reads the annotation file itself)."""
    steps_per_epoch = len(dataset) // env.world // batch_size // cfg.accum
    if steps_per_epoch == 0:
        raise SystemExit(f"dataset of {len(dataset)} samples is smaller than one step "
                         f"({env.world} GPUs x {batch_size} x accum {cfg.accum})")
    total_steps = cfg.epochs * steps_per_epoch
    return steps_per_epoch, total_steps, min(total_steps, cfg.max_steps) if cfg.max_steps > 0 else total_steps


def step_batches(dataset, batch_size, cfg, env, step, steps_per_epoch, stop_at, progress):
    """Yields the `accum` micro-batches of each optimizer step from `step` to `stop_at`; a resumed run starts its
    epoch's loader after the batches already used. The time spent waiting for the batches, the loader's start
    included, is counted in `progress`'s data-wait clock (the log's data share)."""
    loader = make_loader(dataset, batch_size, True, cfg.num_workers, cfg.seed, env.ddp)
    while step < stop_at:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        it = iter(aim_loader(loader, epoch, in_epoch * cfg.accum))
        end = min(stop_at, (epoch + 1) * steps_per_epoch)
        for _ in range(step, end):
            yield [progress.next_batch(it) for _ in range(cfg.accum)]
        step = end
