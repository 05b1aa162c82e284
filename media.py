"""Reading pixels from files: videos decoded with PyAV, images and frame folders (mmaction's rawframes) with OpenCV.
Every reader returns uint8 RGB frames; a file that cannot give what was asked (too few frames, an undecodable image,
a wrong frame count) raises MediaError, and PyAV's errors and OSError pass through.

Frame i of a video is its i-th frame in display order, as decord (the official decoder) numbers frames, whatever the
frame rate. A read uses the file's keyframes (from its packets): it seeks to the keyframe before a wanted frame
whenever that skips decoding frames, else decodes on, so an all-intra file (tools/prepare.py writes them) costs one
seek and one decoded frame per wanted frame, and a long-GOP file a sequential decode from the keyframe before the
clip. Frame folders are read as the official RawFrameDecode reads them (OpenCV, files img_00001.jpg ..).
"""
import bisect
import functools
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch

cv2.setNumThreads(1)  # DataLoader workers are the parallelism; OpenCV would start a thread per core in every worker

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class MediaError(Exception):
    """A video or image that cannot be decoded as asked (too few frames, corrupt image)."""


# --------------------------------------------------------------------------- decoding (PyAV)
def video_stream(container, path):
    """The first video stream of an open container; MediaError if it has none."""
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
    return container.streams.video[0]


@dataclass(frozen=True)
class VideoIndex:
    """Where a video's frames are: pts[i] is the timestamp of frame i (display order), frame_of the inverse map, and
    keyframes the sorted frame numbers a decode can start from (frame 0 always: decoding from the start of the file
    is what defines the frames)."""
    pts: tuple
    frame_of: dict
    keyframes: tuple


def frame_index(container, stream, path) -> VideoIndex:
    """The VideoIndex of a stream, read from its packets (demuxing only, no decoding): frame i is the packet with the
    i-th smallest pts, as decord (the official decoder) numbers frames (dmlc/decord src/video/video_reader.cc
    IndexKeyframes), whatever the frame rate; a keyframe is a frame whose packet the container flags as one.
    Discarded packets (before an edit list's start) are not displayed, so they are no frames."""
    packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream)
               if packet.size > 0 and not packet.is_discard]
    pts = sorted(p for p, _ in packets)
    if not pts or None in pts or len(set(pts)) < len(pts):
        raise MediaError(f"{path}: no frames, or packets without distinct timestamps; frames cannot be numbered "
                         "(remux it: ffmpeg -i IN -c copy OUT.mp4)")
    frame_of = {p: i for i, p in enumerate(pts)}
    return VideoIndex(tuple(pts), frame_of, tuple(sorted({0} | {frame_of[p] for p, key in packets if key})))


@functools.cache  # counted once per process
def video_frame_count(path) -> int:
    with av.open(str(path)) as container:
        return len(frame_index(container, video_stream(container, path), path).pts)


def decode_plan(keyframes, wanted) -> list:
    """How to decode the wanted frames: [(keyframe, [wanted frames]), ...], one seek to each keyframe, then decoding
    forward to the last of its frames. Frames go in order; the next one starts a new seek when a keyframe lies after
    the frame decoded last and at or before it (the seek then skips decoding the frames in between), else it is
    decoded by going on. So an all-intra file is read with one seek per wanted frame, a file with one keyframe per
    clip span sequentially from the keyframe before the clip, and never more frames are decoded than that way."""
    runs = []
    for i in sorted(set(wanted)):
        key = keyframes[bisect.bisect_right(keyframes, i) - 1]  # the last keyframe at or before frame i
        if runs and key <= runs[-1][1][-1]:
            runs[-1][1].append(i)
        else:
            runs.append((key, [i]))
    return runs


def decoded_frames(packets, stream, path, index, wanted):
    """(frame number, av.VideoFrame) of the stream's `packets` (container.demux(stream) from its position on), in
    decoding order. A frame that is not wanted is decoded only if it is a reference for others (BEVT wants 16 of 128
    frames): skipping the others leaves the wanted frames' pixels unchanged."""
    wanted_pts = {index.pts[i] for i in wanted}
    for packet in packets:  # the last (flush) packet has no pts
        stream.codec_context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        for frame in packet.decode():
            if frame.pts not in index.frame_of:
                raise MediaError(f"{path}: a decoded frame has pts {frame.pts}, which no packet has")
            yield index.frame_of[frame.pts], frame


def packets_from(container, stream, index, key):
    """The stream's packets from keyframe `key` on (the decoder emptied). A seek goes to the keyframe at or before a
    timestamp of the container's seek index, which MP4 keeps in decoding time: where frames are reordered (B-frames)
    at a variable frame rate, a seek to the keyframe's pts can land on the keyframe before; a seek forward to the
    same pts then lands on it."""
    container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)  # also empties the decoder
    packets = container.demux(stream)
    first = next(packets, None)
    if first is not None and index.frame_of.get(first.pts, key) < key:
        container.seek(index.pts[key], stream=stream, backward=False, any_frame=False)
        packets = container.demux(stream)
        first = next(packets, None)
    return itertools.chain([first] if first is not None else [], packets)


def _decode_run(container, stream, path, index, start, wanted, found) -> int | None:
    """Decode from the keyframe `start` forward to the last of the `wanted` frames (sorted) and put them as (H, W, 3)
    uint8 into `found`. Returns the number of frames decoded, None if the decoding began past the first wanted frame
    (nothing is put then)."""
    decoded, run = 0, {}
    for i, frame in decoded_frames(packets_from(container, stream, index, start), stream, path, index, wanted):
        if not decoded and i > wanted[0]:
            return None
        decoded += 1
        if i in wanted and i not in run:
            run[i] = frame.to_ndarray(format="rgb24")
        if i >= wanted[-1]:
            break
    found.update(run)
    return decoded


def decode_wanted(container, stream, path, index, wanted) -> tuple:
    """({frame: (H, W, 3) uint8}, number of frames decoded) for the set `wanted`, read along decode_plan. Every way
    gives the frames of a sequential decode of the whole file; a run whose seek lands past its first frame (a
    container's seek index that disagrees with its packets) is decoded from the first frame instead."""
    found, decoded = {}, 0
    for key, frames in decode_plan(index.keyframes, wanted):
        count = _decode_run(container, stream, path, index, key, frames, found)
        if count is None:
            count = _decode_run(container, stream, path, index, 0, frames, found)
        decoded += count or 0
    return found, decoded


def _picked(pick, num_frames, path) -> np.ndarray:
    """pick(num_frames) as int64 indices, checked to be frames of `path`."""
    indices = np.asarray(pick(num_frames), dtype=np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= num_frames:
        raise MediaError(f"{path}: frame indices {indices.tolist()} are not all in [0, {num_frames})")
    return indices


def read_frames(path, pick) -> np.ndarray:
    """uint8 (T, H, W, 3) holding frames pick(number of frames) (0-based, in display order; repeats allowed) of
    `path`; the file is opened and indexed once."""
    with av.open(str(path)) as container:
        stream = video_stream(container, path)
        index = frame_index(container, stream, path)
        indices = _picked(pick, len(index.pts), path)
        wanted = set(indices.tolist())
        stream.thread_count = 1  # official DecordInit(num_threads=1), loading.py:1154: workers are the parallelism
        found, _ = decode_wanted(container, stream, path, index, wanted)
    if len(found) < len(wanted):
        raise MediaError(f"{path}: frames {sorted(wanted - set(found))} are past the decodable end of the video")
    return np.stack([found[i] for i in indices.tolist()])  # (T, H, W, 3)


def read_video(path, indices) -> torch.Tensor:
    """uint8 (T, H, W, 3) holding frames `indices` of `path`."""
    return torch.from_numpy(read_frames(path, lambda num_frames: indices))


def read_image(path) -> torch.Tensor:
    """uint8 (3, H, W) RGB, a view of the decoded (H, W, 3) array. Decoded by OpenCV as the official ImageDecode
    does (mmcv.imfrombytes with channel_order 'rgb': IMREAD_COLOR, then BGR to RGB), so any PNG or JPEG comes out
    8-bit with 3 channels: 16-bit samples keep their high byte, grey is repeated, alpha is dropped, palettes are
    looked up, the EXIF orientation is applied. MediaError if OpenCV cannot decode the file (corrupt, or a format it
    does not read)."""
    # official: mmaction/datasets/pipelines/loading.py:1454 (ImageDecode): mmcv.imfrombytes(channel_order='rgb')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # (H, W, 3) uint8; None if it cannot be decoded
    if bgr is None:
        raise MediaError(f"{path}: not an image OpenCV can decode (corrupt, or an unsupported format)")
    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)  # (3, H, W)


# --------------------------------------------------------------------------- frame folders (rawframes)
# official: mmaction's RawframeDataset names frame i (0-based, as sampled) img_{i + 1:05}.jpg: filename_tmpl
# 'img_{:05}.jpg' and start_index 1 (mmaction/datasets/rawframe_dataset.py:93, :97), which SampleFrames adds to its
# 0-based indices (mmaction/datasets/pipelines/loading.py:265-266). We also read img_{:05}.png (exact frames).
FRAME_FILE = re.compile(r"img_(\d{5,})\.(jpg|png)")


def frame_file(folder, index, ext=".jpg") -> Path:
    """The file of frame `index` (0-based) of a frame folder."""
    return Path(folder) / f"img_{index + 1:05d}{ext}"


def frame_numbers(folder) -> list:
    """The sorted frame numbers (1-based) of the img_NNNNN.jpg / .png files in a folder."""
    return sorted(int(m[1]) for m in map(FRAME_FILE.fullmatch, os.listdir(folder)) if m)


def _frame_ext(folder):
    return ".png" if frame_file(folder, 0, ".png").exists() else ".jpg"


def read_frame_folder(folder, total_frames, pick) -> np.ndarray:
    """uint8 (T, H, W, 3) holding frames pick(total_frames) (0-based; repeats allowed) of a frame folder, decoded with
    OpenCV as the official RawFrameDecode does (decoding_backend 'cv2', mmcv.imfrombytes to RGB, loading.py:1342,
    :1374-1377). total_frames comes from the annotation, as in mmaction; two file lookups check it (frame
    total_frames - 1 exists, frame total_frames does not), so a wrong count fails every sample, not some."""
    ext = _frame_ext(folder)
    last, after = frame_file(folder, total_frames - 1, ext), frame_file(folder, total_frames, ext)
    if not last.exists():
        raise MediaError(f"{folder}: missing frames or a wrong total_frames ({total_frames}): no {last.name}")
    if after.exists():
        raise MediaError(f"{folder}: wrong total_frames ({total_frames}): {after.name} exists")
    indices, found = _picked(pick, total_frames, folder), {}
    for i in set(indices.tolist()):
        bgr = cv2.imread(str(frame_file(folder, i, ext)), cv2.IMREAD_COLOR)  # None if absent or undecodable
        if bgr is None:
            raise MediaError(f"{folder}: missing frames: {frame_file(folder, i, ext).name} is absent or undecodable")
        found[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3)
    return np.stack([found[i] for i in indices.tolist()])  # (T, H, W, 3)


def frame_folder_problem(folder, total_frames) -> tuple | None:
    """None if a frame folder holds exactly img_00001 .. img_{total_frames:05} (.jpg or .png); ("wrong total_frames",
    text) if it holds another complete sequence from img_00001, else ("missing frames", text naming the first gap)."""
    present, ext = frame_numbers(folder), _frame_ext(folder)
    if present == list(range(1, total_frames + 1)):
        return None
    if present and present == list(range(1, len(present) + 1)):  # complete, but of another length
        return "wrong total_frames", f"{folder}: the list says {total_frames}, the folder holds {len(present)} frames"
    last = max(present + [total_frames])
    missing = sorted(set(range(1, last + 1)) - set(present))
    return "missing frames", (f"{folder}: first missing {frame_file(folder, missing[0] - 1, ext).name} "
                              f"({len(missing)} of {last} missing)")
