"""Reading pixels from files: videos decoded with PyAV, images and frame folders (mmaction's rawframes) with OpenCV.
Every reader returns uint8 RGB frames; a file that cannot give what was asked (too few frames, an undecodable image,
a wrong frame count) raises MediaError, and PyAV's errors and OSError pass through.

Frame i of a video is its i-th frame in display order, as decord (the official decoder) numbers frames, whatever the
frame rate; a read seeks to the keyframe before the first wanted frame and decodes only what it needs. Frame folders
are read as the official RawFrameDecode reads them (OpenCV, files img_00001.jpg ..).

Its own file because frame numbering, seeking and codec quirks are a problem of their own: the pipelines (data.py)
and the annotation readers and tools (annotations.py) ask for frames by index, and only extract-frames' writer
walks a video with the helpers here.
"""
import functools
import os
import re
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


def frame_pts(container, stream, path) -> list:
    """pts of every frame in display order, read from the packets (demuxing only, no decoding): frame i is the packet
    with the i-th smallest pts, as decord (the official decoder) numbers frames (dmlc/decord
    src/video/video_reader.cc IndexKeyframes), whatever the frame rate. Discarded packets (before an edit list's
    start) are not displayed, so they are no frames."""
    pts = [packet.pts for packet in container.demux(stream) if packet.size > 0 and not packet.is_discard]
    if not pts or None in pts or len(set(pts)) < len(pts):
        raise MediaError(f"{path}: no frames, or packets without distinct timestamps; frames cannot be numbered "
                         "(remux it: ffmpeg -i IN -c copy OUT.mp4)")
    return sorted(pts)


@functools.cache  # counted once per process
def video_frame_count(path) -> int:
    with av.open(str(path)) as container:
        return len(frame_pts(container, video_stream(container, path), path))


def decoded_frames(container, stream, path, pts, wanted):
    """(frame index, av.VideoFrame) from the container's position on, in decoding order. A frame that is not wanted is
    decoded only if it is a reference for others (BEVT wants 16 of 128 frames): skipping the others leaves the
    wanted frames' pixels unchanged."""
    index_of, wanted_pts = {p: i for i, p in enumerate(pts)}, {pts[i] for i in wanted}
    for packet in container.demux(stream):  # the last (flush) packet has no pts
        stream.codec_context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        for frame in packet.decode():
            if frame.pts not in index_of:
                raise MediaError(f"{path}: a decoded frame has pts {frame.pts}, which no packet has")
            yield index_of[frame.pts], frame


def _decode(container, stream, path, pts, start, wanted) -> dict | None:
    """{index: (H, W, 3) uint8} of the wanted frames: seek to the keyframe at or before frame `start`, decode forward
    to the last wanted frame. None if the seek landed past the first wanted frame."""
    container.seek(pts[start], stream=stream, backward=True, any_frame=False)
    found = {}
    for i, frame in decoded_frames(container, stream, path, pts, wanted):
        if not found and i > min(wanted):
            return None
        if i in wanted:
            found[i] = frame.to_ndarray(format="rgb24")
        if i >= max(wanted):
            break
    return found


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
        pts = frame_pts(container, stream, path)
        indices = _picked(pick, len(pts), path)
        wanted = set(indices.tolist())
        stream.thread_count = 1  # official DecordInit(num_threads=1), loading.py:1154: workers are the parallelism
        found = _decode(container, stream, path, pts, min(wanted), wanted)
        if found is None:  # the container's seek index overshot: decode from the first frame instead
            found = _decode(container, stream, path, pts, 0, wanted)
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
