"""tokenizer.py: DALL-E encoder exactness and precision, safe conversion of encoder.pkl, encode, the VQ tokenizer."""
import importlib
import importlib.util
import math
import os
import sys
import types
from collections import OrderedDict
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import tokenizer as tk  # noqa: E402

SMALL = tk.DalleConfig(n_hid=64, vocab_size=512)  # the reduced encoder, same code path


def random_dalle_state(cfg, seed=0):
    """Random weights with non-zero biases for a DalleEncoder(cfg)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in tk.DalleEncoder(cfg).state_dict().items()}
    return {k: (torch.randn(s, generator=g) / math.sqrt(max(1, math.prod(s[1:]))) if k.endswith(".w")
                else 0.1 * torch.randn(s, generator=g)) for k, s in shapes.items()}


def reference_logits(sd, x, n_blk=2, dtype=torch.float32):
    """Independent reference from mmaction/models/dall_e/encoder.py with plain F.conv2d, every conv in `dtype` (fp16:
    what apex amp O1 does to every F.conv2d; the other ops run in the dtype the convs produce)."""
    conv = lambda x, p: F.conv2d(x.to(dtype), sd[p + ".w"].to(dtype), sd[p + ".b"].to(dtype),
                                 padding=(sd[p + ".w"].shape[-1] - 1) // 2)
    x = conv(x, "blocks.input")
    for g in range(1, 5):
        for i in range(1, n_blk + 1):
            p = f"blocks.group_{g}.block_{i}"
            ident = conv(x, p + ".id_path") if p + ".id_path.w" in sd else x
            r = x
            for k in range(1, 5):
                r = conv(F.relu(r), f"{p}.res_path.conv_{k}")
            x = ident + (1 / (4 * n_blk) ** 2) * r
        if g < 4:
            x = F.max_pool2d(x, 2)
    return conv(F.relu(x), "blocks.output.conv")


def structured_frames(n, size, seed):
    """Coloured rectangles and discs on gradient backgrounds, uint8 (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        c0, d = r(3, 1, 1), r(1)
        img = c0 + (0.5 * r(3, 1, 1) - 0.25) * (d * yy + (1 - d) * xx)  # (3, S, S) gradient background
        for _ in range(int(r(1) * 3) + 1):
            cy, cx, rad = r(1) * size, r(1) * size, (0.15 + 0.3 * r(1)) * size
            shape = ((yy * size - cy) ** 2 + (xx * size - cx) ** 2 < rad ** 2) if r(1) < 0.5 else \
                (((yy * size - cy).abs() < rad) & ((xx * size - cx).abs() < rad * 0.6))
            img = torch.where(shape, r(3, 1, 1), img)
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.stack(out)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small gain nothing from threads, and on a busy shared CPU idle OpenMP threads spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_dalle():
    torch.manual_seed(0)
    enc = tk.DalleEncoder(SMALL).eval().requires_grad_(False)
    enc.load_state_dict(random_dalle_state(SMALL))
    return enc


@pytest.fixture(scope="module")
def tiny_vq():
    cfg = tk.VQConfig(hid=16, code_dim=16, vocab_size=64, size=32, val_frames=32, steps=200, batch_size=16,
                      log_every=1000)
    frames = structured_frames(224, cfg.size, seed=1)
    return tk.train_vq_tokenizer(frames, cfg, log=lambda s: None).eval(), frames[:cfg.val_frames]


# --- DALL-E encoder ---------------------------------------------------------------------------------------------

def test_full_dalle_keys_and_shapes_match_official():
    with torch.device("meta"):
        sd = tk.DalleEncoder(tk.DalleConfig()).state_dict()
    expected = {"blocks.input.w": (256, 3, 7, 7), "blocks.input.b": (256,)}  # the official encoder.pkl's keys
    c_in = 256
    for g, c in zip(range(1, 5), (256, 512, 1024, 2048)):
        for i in (1, 2):
            p = f"blocks.group_{g}.block_{i}"
            n_in = c_in if i == 1 else c
            if n_in != c:
                expected[p + ".id_path.w"], expected[p + ".id_path.b"] = (c, n_in, 1, 1), (c,)
            for k, (a, b, kw) in enumerate([(n_in, c // 4, 3), (c // 4, c // 4, 3), (c // 4, c // 4, 3),
                                            (c // 4, c, 1)], 1):
                expected[f"{p}.res_path.conv_{k}.w"], expected[f"{p}.res_path.conv_{k}.b"] = (b, a, kw, kw), (b,)
        c_in = c
    expected["blocks.output.conv.w"], expected["blocks.output.conv.b"] = (8192, 2048, 1, 1), (8192,)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert len(sd) == 74
    assert sum(v.numel() for v in sd.values()) == 53_786_240


def test_reduced_dalle_logits_match_reference(small_dalle):
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    assert torch.equal(small_dalle(x), reference_logits(random_dalle_state(SMALL), x))
    assert small_dalle(x).shape == (2, 512, 4, 6)


def test_encode_is_map_pixels_argmax(small_dalle):
    """encode(uint8 view) = argmax of the logits of MapPixels(view / 255) (official: augmentations.py:1459-1472,
    bevt_multisource_head.py:59); the view is already at tokenizer resolution, encode does not resize."""
    views = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    ref = reference_logits(random_dalle_state(SMALL), 0.8 * (views.float() / 255) + 0.1).argmax(1)  # once
    assert torch.equal(small_dalle.encode(views), ref) and ref.shape == (2, 2, 3)


def test_precision_values_and_conv_dtypes():
    """"official": every conv in fp16 on CUDA, the output conv too (apex O1, mmaction/apis/train.py:98-99), fp32 on
    CPU; "fp32": fp32 everywhere. Bad values fail at once, naming the choices."""
    for precision, cuda_dtype in (("official", torch.float16), ("fp32", torch.float32)):
        assert tk.conv_dtype(precision, "cuda") == cuda_dtype and tk.conv_dtype(precision, "cpu") == torch.float32
        with torch.device("meta"):
            enc = tk.DalleEncoder(tk.DalleConfig(precision=precision))
        convs = [m for m in enc.modules() if isinstance(m, tk.DalleConv2d)]
        assert len(convs) == 1 + 4 * 2 * 4 + 3 + 1  # input, 4 convs per block, 3 id paths, output
        assert {tk.conv_dtype(m.precision, "cuda") for m in convs} == {cuda_dtype}
        assert convs[-1] is enc.blocks.output.conv
    for bad in ("bf16", "fp16", ""):
        with pytest.raises(ValueError, match="official"):
            tk.DalleEncoder(tk.DalleConfig(precision=bad))
    with pytest.raises(ValueError, match="official"):
        tk.load_tokenizer("/nonexistent.pt", "cpu", precision="half")


def test_official_precision_runs_every_conv_in_fp16(small_dalle, monkeypatch):
    """With the CUDA dtype plumbing forced onto the CPU, "official" computes what O1 computed: every conv, the output
    conv included, in fp16 (the reference casts every F.conv2d to fp16); fp32 mode stays bit-identical to fp32."""
    views = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    x = 0.8 * (views.float() / 255) + 0.1
    sd = random_dalle_state(SMALL)
    fp32 = small_dalle.encode(views)
    assert torch.equal(fp32, reference_logits(sd, x).argmax(1))
    conv_dtype = tk.conv_dtype
    monkeypatch.setattr(tk, "conv_dtype", lambda precision, device_type: conv_dtype(precision, "cuda"))
    official = tk.DalleEncoder(SMALL).eval()
    official.load_state_dict(sd)
    logits = official(x)
    assert logits.dtype == torch.float16
    assert torch.equal(logits, reference_logits(sd, x, dtype=torch.float16))
    fp16_output_conv = reference_logits(sd, x, dtype=torch.float16)
    half_then_fp32_output = F.conv2d(F.relu(official.blocks[:-1](x)).float(), sd["blocks.output.conv.w"],
                                     sd["blocks.output.conv.b"])  # the output conv in fp32: what we computed before
    assert not torch.equal(half_then_fp32_output.half(), fp16_output_conv)
    exact = tk.DalleEncoder(replace(SMALL, precision="fp32")).eval()
    exact.load_state_dict(sd)
    assert torch.equal(exact.encode(views), fp32)


def test_encode_turns_tf32_off_and_restores_it(small_dalle, monkeypatch):
    seen = []
    ids_from_view = tk.DalleEncoder.ids_from_view
    flags = lambda: (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    monkeypatch.setattr(tk.DalleEncoder, "ids_from_view",
                        lambda self, view: seen.append(flags()) or ids_from_view(self, view))
    before = flags()
    small_dalle.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    assert seen == [("ieee", "ieee")]
    assert flags() == before


def test_bit_identical_to_official_dall_e(monkeypatch):
    pytest.importorskip("attr")
    spec = importlib.util.find_spec("dall_e")
    if spec is None:
        pytest.skip("dall-e==0.1 not installed")
    # dall_e/__init__.py imports `requests` (URL downloads only): import the package's modules without running it.
    pkg = types.ModuleType("dall_e")
    pkg.__path__ = list(spec.submodule_search_locations)
    monkeypatch.setitem(sys.modules, "dall_e", pkg)
    try:
        official = importlib.import_module("dall_e.encoder").Encoder(n_hid=64, vocab_size=512)
    finally:
        for m in ("dall_e.encoder", "dall_e.utils"):
            sys.modules.pop(m, None)
    sd = random_dalle_state(SMALL, seed=3)
    official.load_state_dict(sd)
    ours = tk.DalleEncoder(SMALL)
    ours.load_state_dict(official.state_dict())
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), official(x))


# --- converting encoder.pkl -------------------------------------------------------------------------------------

class StandinConv2d(nn.Module):  # the official attrs classes' layout: fields are plain instance attributes
    def __init__(self, n_in, n_out, kw, sd, key, use_float16=True):
        super().__init__()
        self.n_in, self.n_out, self.kw, self.use_float16 = n_in, n_out, kw, use_float16
        self.device, self.requires_grad = torch.device("cpu"), False
        self.w, self.b = nn.Parameter(sd[key + ".w"], requires_grad=False), nn.Parameter(sd[key + ".b"], False)


class StandinEncoderBlock(nn.Module):
    def __init__(self, n_in, n_out, sd, key):
        super().__init__()
        self.n_in, self.n_out, self.n_layers, self.device, self.requires_grad = n_in, n_out, 8, None, False
        self.n_hid, self.post_gain = n_out // 4, 1 / 64
        h = n_out // 4
        self.id_path = StandinConv2d(n_in, n_out, 1, sd, key + ".id_path") if n_in != n_out else nn.Identity()
        convs = [(n_in, h, 3), (h, h, 3), (h, h, 3), (h, n_out, 1)]
        self.res_path = nn.Sequential(OrderedDict(
            sum([[(f"relu_{k}", nn.ReLU()), (f"conv_{k}", StandinConv2d(*c, sd, f"{key}.res_path.conv_{k}"))]
                 for k, c in enumerate(convs, 1)], [])))


class StandinEncoder(nn.Module):
    def __init__(self, n_hid, vocab_size, sd):
        super().__init__()
        self.n_hid, self.n_blk_per_group, self.input_channels, self.vocab_size = n_hid, 2, 3, vocab_size
        self.device, self.requires_grad, self.use_mixed_precision = torch.device("cpu"), False, True
        n, groups = n_hid, [("input", StandinConv2d(3, n_hid, 7, sd, "blocks.input"))]
        for g, (a, b) in enumerate([(n, n), (n, 2 * n), (2 * n, 4 * n), (4 * n, 8 * n)], 1):
            blocks = [(f"block_{i}", StandinEncoderBlock(a if i == 1 else b, b, sd, f"blocks.group_{g}.block_{i}"))
                      for i in (1, 2)]
            groups.append((f"group_{g}", nn.Sequential(OrderedDict(blocks + [("pool", nn.MaxPool2d(2))] * (g < 4)))))
        groups.append(("output", nn.Sequential(OrderedDict([
            ("relu", nn.ReLU()), ("conv", StandinConv2d(8 * n, vocab_size, 1, sd, "blocks.output.conv", False))]))))
        self.blocks = nn.Sequential(OrderedDict(groups))


StandinConv2d.__qualname__, StandinEncoderBlock.__qualname__, StandinEncoder.__qualname__ = \
    "Conv2d", "EncoderBlock", "Encoder"  # pickle finds a class by module + qualname


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def save_official_layout(obj, path, legacy, monkeypatch):
    """torch.save with the stand-ins registered as dall_e.encoder/dall_e.utils only while saving."""
    with monkeypatch.context() as m:
        for mod, names in (("dall_e.encoder", {"Encoder": StandinEncoder, "EncoderBlock": StandinEncoderBlock}),
                           ("dall_e.utils", {"Conv2d": StandinConv2d})):
            module = types.ModuleType(mod)
            for name, cls in names.items():
                m.setattr(cls, "__module__", mod)
                setattr(module, name, cls)
            m.setitem(sys.modules, mod, module)
        m.setitem(sys.modules, "dall_e", types.ModuleType("dall_e"))
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_convert_round_trip(tmp_path, monkeypatch, legacy):
    sd = random_dalle_state(SMALL, seed=4)
    save_official_layout(StandinEncoder(64, 512, sd), tmp_path / "encoder.pkl", legacy, monkeypatch)
    for mod in ("dall_e", "dall_e.encoder", "dall_e.utils"):
        monkeypatch.setitem(sys.modules, mod, None)
    tk.main(["convert", str(tmp_path / "encoder.pkl"), str(tmp_path / "dalle.pt")])
    ckpt = torch.load(tmp_path / "dalle.pt", map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "dalle" and ckpt["config"]["n_hid"] == 64 and ckpt["config"]["vocab_size"] == 512
    assert len(ckpt["source_sha256"]) == 64 and ckpt["config"]["precision"] == "official"
    enc = tk.load_tokenizer(tmp_path / "dalle.pt", "cpu")
    assert enc.vocab_size == 512 and not any(p.requires_grad for p in enc.parameters())
    assert enc.cfg.precision == "official" and tk.load_tokenizer(tmp_path / "dalle.pt", "cpu", "fp32").cfg.precision \
        == "fp32"  # the file's precision is honoured, the argument overrides it
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(enc(x), reference_logits(sd, x))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_convert_refuses_malicious_pickle(tmp_path, legacy):
    marker = tmp_path / "pwned"
    torch.save(Evil(marker), tmp_path / "evil.pkl", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match=r"evil\.pkl.*(posix|os)\.system"):
        tk.convert_dalle(tmp_path / "evil.pkl", tmp_path / "out.pt")
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_convert_rejects_wrong_shapes(tmp_path, monkeypatch):
    sd = random_dalle_state(SMALL, seed=5)
    enc = StandinEncoder(64, 512, sd)
    enc.n_hid = 128  # fields disagree with the weights
    save_official_layout(enc, tmp_path / "encoder.pkl", False, monkeypatch)
    with pytest.raises(ValueError, match="does not match"):
        tk.convert_dalle(tmp_path / "encoder.pkl", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


# --- encode ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dalle", "vq"])
def test_encode_shapes_clips_and_batch_independence(kind, small_dalle, tiny_vq):
    tok = small_dalle if kind == "dalle" else tiny_vq[0]
    clips = structured_frames(2 * 3, 32, seed=7).reshape(2, 3, 3, 32, 32).transpose(1, 2)  # (B=2, 3, T=3, 32, 32)
    ids = tok.encode(clips)
    assert ids.shape == (2, 3, 4, 4) and ids.dtype == torch.int64
    assert 0 <= ids.min() and ids.max() < tok.vocab_size
    frames = clips.transpose(1, 2).reshape(6, 3, 32, 32)  # (B*T, 3, h, w)
    per_frame = torch.stack([tok.encode(f[None])[0] for f in frames])  # (6, 4, 4) one frame at a time
    assert torch.equal(ids.reshape(6, 4, 4), per_frame)
    assert torch.equal(tok.encode(frames[[5, 0, 3]]), per_frame[[5, 0, 3]])
    assert torch.equal(tok.ids_from_view(frames.float() / 255), per_frame)
    with pytest.raises(ValueError, match="divisible by 8"):
        tok.encode(frames[..., :28])
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(frames.float() / 255)


# --- VQ tokenizer -----------------------------------------------------------------------------------------------

def test_vq_uses_codes_and_beats_mean_colour(tiny_vq):
    tok, val = tiny_vq
    views = val.float() / 255  # (N, 3, 32, 32): the size it was trained at
    codes = tok.ids_from_view(views).unique()
    assert len(codes) > tok.vocab_size / 4
    with torch.no_grad():
        mse = F.mse_loss(tok.reconstruct(views), views).item()
    baseline = F.mse_loss(views.mean((2, 3), keepdim=True).expand_as(views), views).item()  # per-frame mean colour
    assert mse < baseline, (mse, baseline)


def test_vq_training_is_deterministic():
    cfg = tk.VQConfig(hid=8, code_dim=8, vocab_size=16, size=16, val_frames=8, steps=4, batch_size=8)
    frames = structured_frames(40, 16, seed=3)
    torch.manual_seed(123)  # the global RNG state must not matter
    a = tk.train_vq_tokenizer(frames, cfg, log=lambda s: None).state_dict()
    b = tk.train_vq_tokenizer(frames, cfg, log=lambda s: None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vq_checkpoint_round_trip(tiny_vq, tmp_path):
    tok, val = tiny_vq
    tk.save_tokenizer(tok, tmp_path / "tok.pt")
    ckpt = torch.load(tmp_path / "tok.pt", map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "vq" and ckpt["config"]["vocab_size"] == 64
    loaded = tk.load_tokenizer(tmp_path / "tok.pt", "cpu")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded.encode(val), tok.encode(val))
    assert all(torch.equal(v, tok.state_dict()[k]) for k, v in loaded.state_dict().items())
