"""Who is this: a gallery of enrolled speakers, and open-set identification against it.

A gallery file is JSON (format in ``docs/reference.md``): one unit-length embedding per
enrolled speaker, the mean of its enrolment clips' unit embeddings, and the fingerprint
of the model that made them, so that a gallery is never scored with another model.
"""

import hashlib
import json
import math
import os
import unicodedata

import numpy as np

from fefa_speechbrain.atomic import atomic_write_text

GALLERY_FORMAT = "fefa-speechbrain-gallery"
GALLERY_VERSION = 1


class GalleryError(ValueError):
    """A gallery file that cannot be used, with the file and the reason."""


def model_fingerprint(modules):
    """sha256 of the embedding model's weights and the front-end's class names.

    The same weights give the same fingerprint whatever the backend they run on
    (PyTorch, ONNX Runtime, TorchScript all embed alike within 1e-5).

    Example
    -------
    >>> from fefa_speechbrain.lobes.features import Spectrogram, FrameNormalization
    >>> from fefa_speechbrain.lobes.vggm import VGGM
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> modules = {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
    ...            "embedding_model": VGGM(width=0.125)}
    >>> model_fingerprint(modules) == model_fingerprint(modules), len(model_fingerprint(modules))
    (True, 64)
    """
    digest = hashlib.sha256()
    for key in ("compute_features", "mean_var_norm", "embedding_model"):
        digest.update(f"{key}={type(modules[key]).__name__};".encode())
    for name, tensor in sorted(modules["embedding_model"].state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _unit(vector):
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(vector)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("an embedding is zero or not finite")
    return vector / norm


def check_name(name):
    """The speaker name, stripped; an error for an empty one or control characters."""
    cleaned = str(name).strip()
    if not cleaned:
        raise GalleryError("a speaker name cannot be empty")
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise GalleryError(f"speaker name {cleaned!r} holds control characters")
    return cleaned


class Gallery:
    """Enrolled speakers of one model.

    Arguments
    ---------
    fingerprint : str
        :func:`model_fingerprint` of the model the embeddings come from.
    model : str
        How the model was named when the gallery was made (shown in errors only).

    Example
    -------
    >>> gallery = Gallery("ab" * 32, "my-model")
    >>> gallery.enrol("alice", [[1.0, 0.0], [0.9, 0.1]], ["a1.wav", "a2.wav"])
    >>> gallery.enrol("bob", [[0.0, 1.0]], ["b1.wav"])
    >>> [(name, round(score, 3)) for name, score in gallery.rank([0.6, 0.8])]
    [('bob', 0.8), ('alice', 0.643)]
    >>> name, ranking = gallery.identify([0.1, -1.0], threshold=0.35)
    >>> name, [who for who, _ in ranking]
    (None, ['alice', 'bob'])
    """

    def __init__(self, fingerprint, model=""):
        self.fingerprint = fingerprint
        self.model = model
        self.speakers = {}  # name -> {"embedding": unit np.ndarray, "clips": [paths]}

    def __len__(self):
        return len(self.speakers)

    def enrol(self, name, embeddings, clips):
        """Enrols (or re-enrols) ``name``: the mean of the clips' unit embeddings."""
        name = check_name(name)
        rows = [_unit(row) for row in np.asarray(embeddings, dtype=np.float64)]
        if not rows:
            raise GalleryError(f"no embedding to enrol {name!r} with")
        if self.speakers:
            dim = next(iter(self.speakers.values()))["embedding"].size
            if rows[0].size != dim:
                raise GalleryError(f"{name!r}: embeddings of {rows[0].size} dimensions, the "
                                   f"gallery holds {dim}")
        self.speakers[name] = {"embedding": _unit(np.mean(rows, axis=0)), "clips": list(map(str, clips))}

    def rank(self, embedding, top_k=None):
        """``[(name, cosine), ...]``, best first (at most ``top_k``)."""
        if not self.speakers:
            raise GalleryError("the gallery is empty: enrol speakers first")
        probe = _unit(embedding)
        dim = next(iter(self.speakers.values()))["embedding"].size
        if probe.size != dim:
            raise GalleryError(f"an embedding of {probe.size} dimensions against a gallery of {dim}")
        scores = [(name, float(entry["embedding"] @ probe)) for name, entry in self.speakers.items()]
        scores.sort(key=lambda item: (-item[1], item[0]))
        return scores[:top_k] if top_k else scores

    def identify(self, embedding, threshold, top_k=3):
        """``(name or None, top_k ranking)``: None ("none of them") when the best cosine is
        below ``threshold`` (open-set identification)."""
        ranking = self.rank(embedding, top_k)
        return (ranking[0][0] if ranking[0][1] >= threshold else None), ranking

    def to_json(self):
        return {
            "format": GALLERY_FORMAT,
            "version": GALLERY_VERSION,
            "model": {"fingerprint": self.fingerprint, "source": self.model},
            "speakers": {name: {"embedding": [float(x) for x in entry["embedding"]],
                                "clips": entry["clips"]} for name, entry in self.speakers.items()},
        }

    def save(self, path):
        """Writes the gallery to ``path`` atomically (a crash leaves the old file whole)."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path, fingerprint=None):
        """Reads a gallery file; with ``fingerprint``, refuses one made by another model.

        Raises
        ------
        GalleryError
            Naming ``path``: not a gallery, a damaged entry, or another model's gallery.
        """
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise GalleryError(f"{path} is not a gallery file (not JSON: {error})") from error
        if not isinstance(data, dict) or data.get("format") != GALLERY_FORMAT:
            raise GalleryError(f"{path} is not a gallery file (no \"format\": \"{GALLERY_FORMAT}\")")
        if data.get("version") != GALLERY_VERSION:
            raise GalleryError(f"{path}: gallery version {data.get('version')!r}, this version "
                               f"reads {GALLERY_VERSION}")
        model = data.get("model") or {}
        gallery = cls(str(model.get("fingerprint", "")), str(model.get("source", "")))
        if fingerprint is not None and gallery.fingerprint != fingerprint:
            raise GalleryError(
                f"{path} was made with another model ({gallery.model or 'unnamed'}, weights "
                f"{gallery.fingerprint[:12]}), not this one (weights {fingerprint[:12]}): "
                "embeddings of two models cannot be compared; enrol again with this model"
            )
        speakers = data.get("speakers")
        if not isinstance(speakers, dict):
            raise GalleryError(f"{path}: \"speakers\" is not an object")
        dims = set()
        for name, entry in speakers.items():
            vector = entry.get("embedding") if isinstance(entry, dict) else None
            if (not isinstance(vector, list) or not vector
                    or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in vector)):
                raise GalleryError(f"{path}: speaker {name!r} has no valid embedding")
            dims.add(len(vector))
            gallery.speakers[check_name(name)] = {
                "embedding": _unit(vector), "clips": [str(c) for c in entry.get("clips", [])]}
        if len(dims) > 1:
            raise GalleryError(f"{path}: embeddings of different sizes {sorted(dims)}")
        return gallery

    @classmethod
    def open_or_create(cls, path, fingerprint, model=""):
        """The gallery at ``path`` if it exists (checked against ``fingerprint``), else a new one."""
        if os.path.exists(path):
            return cls.load(path, fingerprint)
        return cls(fingerprint, model)
