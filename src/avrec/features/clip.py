"""CLIP image/text encoder: images and texts in one space (search frames by words, zero-shot tags).

Any checkpoint that ``transformers.CLIPModel`` loads works: a local directory written by
``save_pretrained`` (model, tokenizer and ideally ``preprocessor_config.json``), or a Hugging Face
hub id such as ``"openai/clip-vit-base-patch32"`` (needs network once; it is cached afterwards).
Nothing is shipped with avrec, so this encoder is for users who have a checkpoint; tests and demos
use :func:`save_tiny_clip`, a tiny randomly initialised CLIP.

Images are preprocessed here with numpy and PyAV (no PIL or torchvision): the shortest side is
resized to the checkpoint's size with bicubic filtering, the centre is cropped to the model's
``image_size``, pixels are scaled to [0, 1] and normalised with the checkpoint's mean and standard
deviation (OpenAI's constants when the checkpoint has no preprocessor config). The model is called
through its vision and text towers plus their projections, as ``get_image_features`` and
``get_text_features`` do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avrec.errors import ConfigError, MediaError
from avrec.features.base import Encoder, l2_normalise, register_encoder

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "CLIPEncoder", "save_tiny_clip"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_HOW = (
    "give a local directory written by CLIPModel.save_pretrained (with its tokenizer), or a "
    "Hugging Face hub id such as 'openai/clip-vit-base-patch32' with network access once (it is "
    "cached afterwards; AVREC_OFFLINE=1 or HF_HUB_OFFLINE=1 allows only cached files)"
)
_FALSE = ("", "0", "false", "no", "off")


def _offline_default() -> bool:
    if os.environ.get("AVREC_OFFLINE", "").strip().lower() in ("1", "true"):
        return True
    return any(
        os.environ.get(k, "").strip().lower() not in _FALSE
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _looks_like_path(model: str) -> bool:
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or model.count("/") > 1
        or "\\" in model
        or Path(model).exists()
    )


@dataclass(frozen=True)
class _Preprocess:
    """How images become pixel tensors for one checkpoint."""

    short: int  # shortest side after resizing
    crop: int  # square centre crop (the model's image_size)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def tag(self) -> str:
        norm = json.dumps([self.mean, self.std]).encode()
        return f"pyav-bicubic{self.short}-crop{self.crop}-n{hashlib.sha1(norm).hexdigest()[:6]}"

    def pixels(self, img: Any) -> np.ndarray:
        """``3 x crop x crop`` float32 of one RGB ``uint8`` image (any size)."""
        import av

        a = np.asarray(img)
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
            raise MediaError(f"expected an H x W x 3 RGB image, got shape {a.shape}")
        if a.dtype != np.uint8:
            raise MediaError(f"expected uint8 pixels, got {a.dtype}")
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        a = np.ascontiguousarray(a[..., :3])
        h, w = a.shape[:2]
        # As transformers' CLIP processor: shortest side to `short`, the other scaled and truncated.
        short = max(self.short, self.crop)
        if w <= h:
            nw, nh = short, max(short, int(short * h / w))
        else:
            nw, nh = max(short, int(short * w / h)), short
        if (nh, nw) != (h, w):
            frame = av.VideoFrame.from_ndarray(a, format="rgb24")
            a = frame.reformat(width=nw, height=nh, format="rgb24", interpolation="BICUBIC")
            a = a.to_ndarray()
        top, left = (nh - self.crop) // 2, (nw - self.crop) // 2
        a = a[top : top + self.crop, left : left + self.crop]
        x = a.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


@register_encoder
class CLIPEncoder(Encoder):
    """``encode(images)`` and ``encode_text(texts)`` into one space; ``tag`` for zero-shot labels.

    Args:
        model: a local directory written by ``save_pretrained``, or a hub id.
        batch_size: images or texts per forward pass.
        threads: torch CPU threads (default: all cores).
        local_files_only: never touch the network (default: on when ``AVREC_OFFLINE`` is
            ``1``/``true`` or ``HF_HUB_OFFLINE`` is set).

    Loading is lazy; ``dim`` and ``version`` read only the config. A checkpoint that cannot be
    loaded raises :class:`~avrec.errors.ConfigError`.
    """

    name = "clip"
    modality = "image"

    def __init__(
        self,
        model: str,
        batch_size: int = 16,
        threads: int | None = None,
        local_files_only: bool | None = None,
    ) -> None:
        if not model or not str(model).strip():
            raise ConfigError(f"CLIP needs a checkpoint: {_HOW}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = str(model)
        self.batch_size = batch_size
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self.local_files_only = _offline_default() if local_files_only is None else local_files_only
        self._cfg: Any = None
        self._cfg_id: str | None = None
        self._prep: _Preprocess | None = None
        self._net: Any = None
        self._tok: Any = None

    # -- loading -------------------------------------------------------------------------------

    def _fail(self, why: object) -> ConfigError:
        mode = " (offline: only local or cached files)" if self.local_files_only else ""
        return ConfigError(f"cannot load CLIP checkpoint {self.model!r}{mode}: {why}; {_HOW}")

    def _file(self, filename: str, required: bool) -> str | None:
        """Local path of one checkpoint file (downloaded when allowed); None if absent."""
        if _looks_like_path(self.model):
            d = Path(self.model).expanduser()
            if not d.is_dir():
                raise self._fail("no such directory")
            p = d / filename
            if p.is_file():
                return str(p)
            if required:
                raise self._fail(f"{filename} not found in the directory")
            return None
        try:
            from transformers.utils import cached_file
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError("CLIP needs transformers: pip install 'avrec[clip]'") from e
        try:
            path = cached_file(
                self.model,
                filename,
                local_files_only=self.local_files_only,
                _raise_exceptions_for_missing_entries=False,
            )
        except (OSError, ValueError) as e:
            if not required:
                return None
            raise self._fail(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        if path is None and required:
            where = (
                "in the local cache" if self.local_files_only else "(no network, or no such repo?)"
            )
            raise self._fail(f"{filename} not found {where}")
        return path

    def _config(self) -> Any:
        if self._cfg is None:
            try:
                from transformers import CLIPConfig
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ConfigError("CLIP needs transformers: pip install 'avrec[clip]'") from e
            path = self._file("config.json", required=True)
            raw = Path(path).read_bytes()
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise self._fail(f"config.json is not JSON ({e})") from e
            if data.get("model_type") != "clip":
                raise self._fail(
                    f"config.json has model_type {data.get('model_type')!r}, not 'clip'"
                )
            cfg = CLIPConfig.from_dict(data)
            # A hub snapshot names its commit; a local directory is known by its config's content.
            m = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", path)
            self._cfg_id = m.group(1)[:12] if m else "cfg" + hashlib.sha1(raw).hexdigest()[:10]
            self._prep = self._read_preprocess(cfg)
            self._cfg = cfg
        return self._cfg

    def _read_preprocess(self, cfg: Any) -> _Preprocess:
        crop = int(cfg.vision_config.image_size)
        short, mean, std = crop, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        path = self._file("preprocessor_config.json", required=False)
        if path is not None:
            try:
                pre = json.loads(Path(path).read_text(encoding="utf-8"))
                mean = tuple(float(v) for v in pre.get("image_mean", mean))
                std = tuple(float(v) for v in pre.get("image_std", std))
                size = pre.get("size", short)
                short = int(size.get("shortest_edge", short) if isinstance(size, dict) else size)
            except (ValueError, TypeError, AttributeError) as e:
                raise self._fail(f"bad preprocessor_config.json ({e})") from e
            if len(mean) != 3 or len(std) != 3:
                raise self._fail("preprocessor_config.json: image_mean/image_std need 3 values")
        return _Preprocess(short=short, crop=crop, mean=mean, std=std)  # type: ignore[arg-type]

    def _load(self) -> tuple[Any, Any]:
        if self._net is None:
            self._config()  # fails fast (and clearly) before any weights are fetched
            from transformers import AutoTokenizer, CLIPModel

            try:
                net = CLIPModel.from_pretrained(self.model, local_files_only=self.local_files_only)
                tok = AutoTokenizer.from_pretrained(
                    self.model, local_files_only=self.local_files_only
                )
            except (OSError, ValueError) as e:
                raise self._fail(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
            self._net, self._tok = net.float().eval(), tok
        return self._net, self._tok

    # -- the contract --------------------------------------------------------------------------

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Embedding size (the config's ``projection_dim``); reads the config, not the weights."""
        return int(self._config().projection_dim)

    @property
    def version(self) -> str:  # type: ignore[override]
        """Checkpoint name, its commit or config hash, and the preprocessing."""
        self._config()
        assert self._prep is not None
        return f"clip:{self.model}@{self._cfg_id}/{self._prep.tag}"

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """``n x 3 x S x S`` float32 pixel tensor, as the model takes it."""
        self._config()
        assert self._prep is not None
        s = self._prep.crop
        if len(images) == 0:
            return np.zeros((0, 3, s, s), np.float32)
        return np.stack([self._prep.pixels(im) for im in images])

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        """Image vectors of RGB ``uint8`` images (H x W x 3, any size)."""
        import torch

        net, _ = self._load()
        torch.set_num_threads(self.threads)
        out = np.zeros((len(batch), self.dim), np.float32)
        for lo in range(0, len(batch), self.batch_size):
            x = torch.from_numpy(self.preprocess(batch[lo : lo + self.batch_size]))
            with torch.inference_mode():
                pooled = net.vision_model(pixel_values=x).pooler_output
                out[lo : lo + len(x)] = net.visual_projection(pooled).float().numpy()
        return l2_normalise(out)

    def encode_text(self, batch: Sequence[str]) -> np.ndarray:
        """Text vectors in the image space (empty texts give zero rows)."""
        import torch

        net, tok = self._load()
        torch.set_num_threads(self.threads)
        texts = [(t or "").strip() for t in batch]
        keep = [i for i, t in enumerate(texts) if t]
        max_len = int(self._config().text_config.max_position_embeddings)
        out = np.zeros((len(texts), self.dim), np.float32)
        for lo in range(0, len(keep), self.batch_size):
            idx = keep[lo : lo + self.batch_size]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            )
            with torch.inference_mode():
                pooled = net.text_model(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                ).pooler_output
                out[idx] = net.text_projection(pooled).float().numpy()
        return l2_normalise(out)

    encode_queries = encode_text  # stands in for the text encoder's query side

    def tag(
        self,
        images: Sequence[Any],
        labels: Sequence[str],
        k: int = 5,
        template: str = "a photo of a {}.",
    ) -> list[list[tuple[str, float]]]:
        """Zero-shot tags: the ``k`` most likely ``labels`` per image, with probabilities.

        Each label is put in ``template`` and scored as CLIP does (``logit_scale`` times the cosine
        similarity, softmax over the labels).
        """
        if not labels:
            raise ConfigError("tag needs at least one label")
        net, _ = self._load()
        img = self.encode(images)
        txt = self.encode_text([template.format(lb) for lb in labels])
        logits = float(net.logit_scale.detach().exp()) * (img @ txt.T)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        out = []
        for row in probs:
            top = np.argsort(-row, kind="stable")[:k]
            out.append([(labels[int(i)], float(row[i])) for i in top])
        return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's map of bytes to printable characters (byte-level BPE alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_TINY_MERGES = ["t h", "th e</w>", "c a", "ca t</w>", "d o", "do g</w>", "p h", "o t", "ph ot"]


def save_tiny_clip(
    path: Path, seed: int = 0, projection_dim: int = 16, image_size: int = 32
) -> Path:
    """Write a tiny, randomly initialised CLIP checkpoint to ``path`` (for tests and demos).

    Its embeddings mean nothing; it exists so the CLIP path can run offline. The tokenizer is a
    real CLIP byte-level BPE over all 256 bytes (with their ``</w>`` end-of-word forms), a few
    merges and the ``<|startoftext|>`` / ``<|endoftext|>`` tokens, built from a ``vocab.json`` and
    ``merges.txt`` written here. Returns ``path``.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(m.split()) for m in _TINY_MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(_TINY_MERGES) + "\n", encoding="utf-8"
    )
    tok = CLIPTokenizer.from_pretrained(str(path), model_max_length=16)
    tok.save_pretrained(str(path))

    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
            "projection_dim": projection_dim,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
            "projection_dim": projection_dim,
        },
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(str(path))
    pre = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
        "do_convert_rgb": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2), encoding="utf-8")
    return path
