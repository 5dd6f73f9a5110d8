"""ONNX and TorchScript graphs of an embedding model, and running them.

The graph holds the embedding model only: inputs ``feats`` [batch, time, n_bins] (the
spectrogram after ``FrameNormalization``) and ``lengths`` [batch] (relative, frame-exact),
output ``embedding`` [batch, dim]; batch and time are dynamic. The spectrogram front-end
stays OUTSIDE the graph (SpeechBrain's STFT, ~1-4 % of the time): :class:`GraphModel`
runs a graph where the embedding model was, so ``SpeakerEmbedder`` computes the features
and frame-exact lengths exactly as for PyTorch. Both exports trace the model
(``torch.jit.script`` does not compile the backbones); inputs shorter than the model's
``min_frames`` are zero-padded by :class:`GraphModel` (a trace keeps one branch only).
"""

import io
import json
import warnings

import torch

from fefa_speechbrain.atomic import atomic_open
from fefa_speechbrain.checks import check_choice
from fefa_speechbrain.evaluation.inference import SpeakerEmbedder

FORMATS = ("onnx", "torchscript")
INPUT_NAMES = ("feats", "lengths")
OUTPUT_NAME = "embedding"
ONNX_OPSET = 17
EXAMPLE_SECONDS = 3.0
METADATA_FILE = "fefa_graph.json"


class _EmbeddingGraph(torch.nn.Module):
    """The embedding model with a [batch, dim] output (the traced module)."""

    def __init__(self, embedding_model):
        super().__init__()
        self.embedding_model = embedding_model

    def forward(self, feats, lengths):
        return self.embedding_model(feats, lengths).flatten(1)


def _length_to_mask_traceable(length, max_len=None, dtype=None, device=None):
    """SpeechBrain's ``length_to_mask`` by broadcasting: same mask, no fixed batch size.

    SpeechBrain's version expands to ``len(length)`` rows, a Python int that a trace
    records, so ECAPA-TDNN's graph would accept only the example's batch size.
    """
    if max_len is None:
        max_len = length.max().long().item()
    steps = torch.arange(max_len, device=length.device, dtype=length.dtype)
    mask = steps.unsqueeze(0) < length.unsqueeze(1)
    return mask.to(dtype=dtype or length.dtype, device=device or length.device)


class _TraceableSpeechBrain:
    """While tracing: ECAPA-TDNN's ``length_to_mask`` replaced by the broadcasting one."""

    def __enter__(self):
        import speechbrain.lobes.models.ECAPA_TDNN as ecapa

        self._module, self._saved = ecapa, ecapa.length_to_mask
        ecapa.length_to_mask = _length_to_mask_traceable

    def __exit__(self, *exc):
        self._module.length_to_mask = self._saved
        return False


def graph_metadata(embedding_model, n_bins=None):
    """What a runner needs besides the graph: n_bins, min_frames, where the front-end is.

    ``n_bins`` defaults to the model's own ``n_bins`` (the package's backbones), else 257.

    Example
    -------
    >>> from fefa_speechbrain.lobes.vggm import VGGM
    >>> graph_metadata(VGGM(width=0.125))["min_frames"]
    65
    """
    return {
        "n_bins": int(n_bins or getattr(embedding_model, "n_bins", 257)),
        "min_frames": int(getattr(embedding_model, "min_frames", 1)),
        "front_end": "outside: feats = FrameNormalization(Spectrogram(wavs)), frame-exact lengths",
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
    }


def example_features(n_bins=257, batch=2, seconds=EXAMPLE_SECONDS, seed=0):
    """A padded feature batch (second row 70 % long) to trace with: (feats, lengths)."""
    generator = torch.Generator().manual_seed(seed)
    frames = 1 + int(seconds * 100)
    feats = torch.randn(batch, frames, n_bins, generator=generator)
    lengths = torch.linspace(1.0, 0.7, batch)
    valid = torch.arange(frames).unsqueeze(0) < torch.round(lengths * frames).unsqueeze(1)
    return feats * valid.unsqueeze(2), lengths


def export_graph(embedding_model, path, fmt, n_bins=None):
    """Writes the embedding model as an ONNX or TorchScript file (atomically).

    Arguments
    ---------
    embedding_model : torch.nn.Module
        Takes (feats [batch, time, n_bins], relative lengths [batch]); any backbone of
        the package, FEFA none/single/multi, or ``FEFAWrapper(ECAPA_TDNN)``.
    path : str
        The file to write.
    fmt : str
        ``"onnx"`` (legacy exporter, opset 17, dynamic batch and time) or
        ``"torchscript"`` (trace + freeze).
    n_bins : int
        Features per frame; needed for models that do not say (e.g. a ``FEFAWrapper``
        around a model on 80 fbanks). :func:`front_end_bins` measures it.

    Returns
    -------
    dict : the graph's metadata (:func:`graph_metadata`), also stored in the file.

    Example
    -------
    >>> from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
    >>> model = ThinResNet34(fefa="single", width=0.125).eval()
    >>> path = str(getfixture("tmpdir") / "model.pt")
    >>> export_graph(model, path, "torchscript")["min_frames"]
    2
    >>> feats, lengths = example_features(seconds=1.3)
    >>> graph = GraphModel(path)
    >>> bool(torch.allclose(graph(feats, lengths)[:, 0], model(feats, lengths)[:, 0], atol=1e-5))
    True
    """
    check_choice("format", fmt, FORMATS)
    metadata = graph_metadata(embedding_model, n_bins)
    was_training = embedding_model.training
    graph = _EmbeddingGraph(embedding_model.eval()).eval()
    example = example_features(metadata["n_bins"])
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), _TraceableSpeechBrain(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation notes, checked by tests
            if fmt == "torchscript":
                traced = torch.jit.freeze(torch.jit.trace(graph, example, check_trace=False))
                torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
            else:
                _export_onnx(graph, example, buffer, metadata)
    finally:
        embedding_model.train(was_training)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return metadata


def _export_onnx(graph, example, buffer, metadata):
    import onnx

    axes = {INPUT_NAMES[0]: {0: "batch", 1: "time"}, INPUT_NAMES[1]: {0: "batch"}}
    torch.onnx.export(
        graph, example, buffer, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
        dynamic_axes={**axes, OUTPUT_NAME: {0: "batch"}}, opset_version=ONNX_OPSET, dynamo=False,
    )
    model = onnx.load_from_string(buffer.getvalue())
    for name, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = name, json.dumps(value)
    buffer.seek(0)
    buffer.truncate()
    buffer.write(model.SerializeToString())


def front_end_bins(modules, sample_rate=16000):
    """Features per frame of a model's front-end (``compute_features``), measured.

    Example
    -------
    >>> from fefa_speechbrain.lobes.features import Spectrogram
    >>> front_end_bins({"compute_features": Spectrogram()})
    257
    """
    with torch.no_grad():
        return int(modules["compute_features"](torch.zeros(1, sample_rate // 2)).shape[-1])


def pad_to_min_frames(feats, lengths, min_frames):
    """Zero-pads feats [batch, time, bins] to ``min_frames`` frames, same frame counts.

    Example
    -------
    >>> feats, lengths = pad_to_min_frames(torch.ones(1, 4, 2), torch.tensor([0.5]), 8)
    >>> feats.shape, lengths.tolist()
    (torch.Size([1, 8, 2]), [0.25])
    """
    frames = feats.shape[1]
    if frames >= min_frames:
        return feats, lengths
    counts = torch.round(lengths.double() * frames)
    feats = torch.nn.functional.pad(feats, (0, 0, 0, min_frames - frames))
    return feats, (counts / min_frames).float()


class GraphModel:
    """Runs an exported graph in place of the embedding model: (feats, lengths) -> [B, 1, dim].

    ``.onnx`` files run on ONNX Runtime (``pip install fefa_speechbrain[onnx]``), other
    files as TorchScript. Put it in a ``SpeakerEmbedder``'s modules as
    ``embedding_model`` (see :func:`graph_embedder`).

    Arguments
    ---------
    path : str
        The file :func:`export_graph` wrote.
    threads : int
        Intra-op threads of ONNX Runtime (TorchScript uses torch's setting).
    """

    def __init__(self, path, threads=1):
        self.path = str(path)
        self.is_onnx = self.path.endswith(".onnx")
        if self.is_onnx:
            self.session, self.metadata = _onnx_session(self.path, threads)
        else:
            files = {METADATA_FILE: ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(self.path, map_location="cpu", _extra_files=files)
            self.module.eval()
            self.metadata = json.loads(files[METADATA_FILE] or "{}")
        self.min_frames = int(self.metadata.get("min_frames", 1))

    @torch.no_grad()
    def __call__(self, feats, lengths):
        feats, lengths = pad_to_min_frames(feats.float().cpu(), lengths.float().cpu(), self.min_frames)
        if self.is_onnx:
            feed = {INPUT_NAMES[0]: feats.contiguous().numpy(), INPUT_NAMES[1]: lengths.numpy()}
            embedding = torch.from_numpy(self.session.run(None, feed)[0])
        else:
            embedding = self.module(feats, lengths)
        return embedding.unsqueeze(1)


def _onnx_session(path, threads):
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            f"{path}: running an ONNX model needs onnxruntime: pip install fefa_speechbrain[onnx]"
        ) from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    metadata = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:  # entries written by other tools (e.g. quantization)
            metadata[key] = value
    return session, metadata


def graph_embedder(modules, path, threads=1):
    """A ``SpeakerEmbedder`` whose embedding model is the graph at ``path``.

    ``modules`` gives the front-end (``compute_features``, ``mean_var_norm``) of the
    model the graph was exported from.
    """
    front_end = {key: modules[key] for key in ("compute_features", "mean_var_norm")}
    return SpeakerEmbedder({**front_end, "embedding_model": GraphModel(path, threads)})
