"""ONNX and TorchScript graphs of an embedding model, and running them.

Two graphs:

- :func:`export_waveform_graph` (what ``fefa-speechbrain export`` writes): the whole model,
  front-end inside. Inputs ``wavs`` [batch, samples] float32 (16 kHz mono) and
  ``lengths`` [batch] (relative), output ``embedding`` [batch, dim] (not length-normalized);
  batch and samples are dynamic. The STFT is a fixed convolution
  (:mod:`fefa_speechbrain.graph_front_end`), so ONNX Runtime and numpy alone turn a
  waveform into the embedding. :class:`WaveformGraphModel` runs one.
- :func:`export_graph`: the embedding model only, inputs ``feats`` [batch, time, n_bins]
  (the normalized spectrogram) and ``lengths`` [batch] (relative, frame-exact), output
  ``embedding`` [batch, dim]. :class:`GraphModel` runs one where the embedding model was,
  so ``SpeakerEmbedder`` computes the features exactly as for PyTorch (the command line's
  ``--backend``, ``bench_speed.py``).

Both trace the model (``torch.jit.script`` does not compile the backbones); a trace keeps
one branch of the backbones' short-input padding, so inputs shorter than the model's
``min_frames`` are zero-padded before it (inside the waveform graph, by
:class:`GraphModel` for the other).
"""

import io
import json
import warnings

import torch

from fefa_speechbrain.atomic import atomic_open
from fefa_speechbrain.checks import check_choice
from fefa_speechbrain.inference.embedder import SpeakerEmbedder

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
        "front_end": "outside: feats = mean_var_norm(compute_features(wavs)) of the model, "
        "frame-exact lengths",
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
    graph = _EmbeddingGraph(embedding_model)
    example = example_features(metadata["n_bins"])
    axes = {INPUT_NAMES[0]: {0: "batch", 1: "time"}, INPUT_NAMES[1]: {0: "batch"}}
    _trace_to_file(graph, embedding_model, example, path, fmt, metadata, INPUT_NAMES, axes)
    return metadata


def _trace_to_file(graph, model, example, path, fmt, metadata, input_names, axes):
    """Traces ``graph`` (``model`` in eval mode meanwhile) and writes it atomically."""
    was_training = model.training
    graph = graph.eval()
    model.eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), _TraceableSpeechBrain(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation notes, checked by tests
            if fmt == "torchscript":
                traced = torch.jit.freeze(torch.jit.trace(graph, example, check_trace=False))
                torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
            else:
                _export_onnx(graph, example, buffer, metadata, input_names, axes)
    finally:
        model.train(was_training)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _export_onnx(graph, example, buffer, metadata, input_names, axes):
    import onnx

    torch.onnx.export(
        graph, example, buffer, input_names=list(input_names), output_names=[OUTPUT_NAME],
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


def _load_graph(path, threads):
    """(is_onnx, ONNX Runtime session or TorchScript module, metadata) of an exported file."""
    if path.endswith(".onnx"):
        session, metadata = onnx_session(path, threads)
        return True, session, metadata
    files = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location="cpu", _extra_files=files)
    module.eval()
    return False, module, json.loads(files[METADATA_FILE] or "{}")


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
        self.is_onnx, runner, self.metadata = _load_graph(self.path, threads)
        if self.is_onnx:
            self.session = runner
        else:
            self.module = runner
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


def onnx_session(path, threads=1):
    """(ONNX Runtime session on the CPU with ``threads`` threads, the graph's metadata)."""
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


WAVEFORM_INPUTS = ("wavs", "lengths")
PARITY_TOLERANCE = 1e-5  # max abs difference / max abs embedding value, checked at export


def waveform_metadata(modules, sample_rate=16000):
    """What a runner of a waveform graph needs, read from the model's modules.

    Example
    -------
    >>> from fefa_speechbrain.lobes.features import Spectrogram, UtteranceNormalization
    >>> from fefa_speechbrain.lobes.vggm import VGGM
    >>> meta = waveform_metadata({"compute_features": Spectrogram(log=True),
    ...     "mean_var_norm": UtteranceNormalization(), "embedding_model": VGGM(width=0.125)})
    >>> meta["front_end"], meta["preprocessing"].split(" -> ")[2].split(":")[0]
    ('inside', 'UtteranceNormalization')
    """
    from fefa_speechbrain.graph_front_end import describe_preprocessing

    model = modules["embedding_model"]
    return {
        "front_end": "inside",
        "inputs": list(WAVEFORM_INPUTS),
        "output": OUTPUT_NAME,
        "sample_rate": int(sample_rate),
        "preprocessing": describe_preprocessing(modules),
        "embedding_model": type(model).__name__,
        "min_frames": int(getattr(model, "min_frames", 1)),
        "embedding": "raw (not length-normalized): score with cosine similarity",
        "batching": "rows of one length are exact; padded rows of different lengths "
        "(with relative lengths) are exact for the package's backbones, not for "
        "SpeechBrain's ECAPA-TDNN, whose convolutions see the padding",
    }


def example_waveforms(sample_rate=16000, batch=2, seconds=EXAMPLE_SECONDS, seed=0):
    """A padded waveform batch (second row 70 % long) to trace with: (wavs, lengths).

    Example
    -------
    >>> wavs, lengths = example_waveforms(100, seconds=1.0)
    >>> wavs.shape, lengths.tolist(), bool(wavs[1, 70:].abs().sum() == 0)
    (torch.Size([2, 100]), [1.0, 0.699999988079071], True)
    """
    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * sample_rate)
    wavs = 0.1 * torch.randn(batch, samples, generator=generator)
    lengths = torch.linspace(1.0, 0.7, batch)
    valid = torch.arange(samples).unsqueeze(0) < torch.round(lengths * samples).unsqueeze(1)
    return wavs * valid, lengths


def export_waveform_graph(modules, path, fmt, sample_rate=16000):
    """Writes the whole model, waveform -> embedding, as an ONNX or TorchScript file.

    The front-end (``compute_features``, a ``Spectrogram``; ``mean_var_norm``, any
    normalization taking ``(feats, lengths)``: ``FrameNormalization``,
    ``UtteranceNormalization``) is inside the graph
    (:class:`~fefa_speechbrain.graph_front_end.WaveformFrontEnd`). Before the file is
    written, the graph is run on inputs of lengths the trace never saw (alone, and below
    ``min_frames``) and compared with the PyTorch path (``SpeakerEmbedder.embed``): a
    difference above ``PARITY_TOLERANCE`` of the largest embedding value raises.

    Arguments
    ---------
    modules : dict
        ``compute_features``, ``mean_var_norm``, ``embedding_model`` of the model.
    path : str
        The file to write.
    fmt : str
        ``"onnx"`` or ``"torchscript"``.
    sample_rate : int
        The model's rate (stored in the metadata; the graph does not resample).

    Returns
    -------
    dict : the metadata (:func:`waveform_metadata`) stored in the file, plus the
    measured ``parity_max_rel_diff`` (:func:`check_waveform_graph`).

    Example
    -------
    >>> from fefa_speechbrain.lobes.features import Spectrogram, FrameNormalization
    >>> from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
    >>> modules = {"compute_features": Spectrogram(log=True), "mean_var_norm": FrameNormalization(),
    ...            "embedding_model": ThinResNet34(fefa="single", width=0.125).eval()}
    >>> path = str(getfixture("tmpdir") / "model.pt")
    >>> export_waveform_graph(modules, path, "torchscript")["preprocessing"].split(" -> ")[0]
    '16 kHz mono float32 waveform'
    >>> WaveformGraphModel(path)(torch.randn(3, 12000), torch.tensor([1.0, 0.5, 0.8])).shape
    torch.Size([3, 512])
    """
    from fefa_speechbrain.graph_front_end import WaveformFrontEnd

    check_choice("format", fmt, FORMATS)
    metadata = waveform_metadata(modules, sample_rate)
    graph = WaveformFrontEnd(modules)
    axes = {WAVEFORM_INPUTS[0]: {0: "batch", 1: "samples"}, WAVEFORM_INPUTS[1]: {0: "batch"}}
    example = example_waveforms(sample_rate)
    _trace_to_file(graph, modules["embedding_model"], example, path, fmt, metadata,
                   WAVEFORM_INPUTS, axes)
    return {**metadata, "parity_max_rel_diff": check_waveform_graph(modules, path, sample_rate)}


def check_waveform_graph(modules, path, sample_rate=16000):
    """The graph's max abs difference to the PyTorch path, relative to the largest value.

    Inputs the trace never saw: noise of 1.7 s, 0.94 s and 0.34 s (below VGG-M's
    ``min_frames``) in one padded batch, run by :class:`WaveformGraphModel` (rows of one
    length together) against ``SpeakerEmbedder.embed``. Raises ``RuntimeError`` above
    ``PARITY_TOLERANCE``; the file is then removed.
    """
    import os

    graph = WaveformGraphModel(path)
    embedder = SpeakerEmbedder(modules)
    generator = torch.Generator().manual_seed(5)
    wavs = 0.1 * torch.randn(3, int(1.7 * sample_rate), generator=generator)
    lengths = torch.tensor([1.0, 0.2, 0.55])
    wavs = wavs * (torch.arange(wavs.shape[1])[None] < torch.round(lengths * wavs.shape[1])[:, None])
    expected = embedder.embed(wavs, lengths)
    actual = graph(wavs, lengths)
    worst = ((actual - expected).abs().max() / expected.abs().max()).item()
    if not worst <= PARITY_TOLERANCE:
        os.remove(path)
        raise RuntimeError(
            f"{path}: the exported graph differs from the PyTorch model by {worst:.2e} of the "
            f"largest embedding value (tolerance {PARITY_TOLERANCE:g}); the file was removed"
        )
    return worst


class WaveformGraphModel:
    """Runs a waveform graph (:func:`export_waveform_graph`): (wavs, lengths) -> [batch, dim].

    Rows of different lengths are run in groups of one length, without their padding, so
    every row gets the embedding it gets alone (as ``SpeakerEmbedder.embed``).

    Arguments
    ---------
    path : str
        A ``.onnx`` file (run on ONNX Runtime) or a TorchScript file.
    threads : int
        Intra-op threads of ONNX Runtime.
    """

    def __init__(self, path, threads=1):
        self.path = str(path)
        self.is_onnx, runner, self.metadata = _load_graph(self.path, threads)
        if self.is_onnx:
            self.session = runner
        else:
            self.module = runner
        if self.metadata.get("front_end") != "inside":
            raise ValueError(f"{self.path} takes features, not waveforms: run it with GraphModel")

    @torch.no_grad()
    def __call__(self, wavs, lengths=None):
        wavs = torch.as_tensor(wavs, dtype=torch.float32).cpu()
        if lengths is None:
            lengths = torch.ones(wavs.shape[0])
        valid = torch.round(torch.as_tensor(lengths).double() * wavs.shape[1]).long()
        out = None
        for length in torch.unique(valid).tolist():
            rows = torch.nonzero(valid == length).flatten()
            emb = self._run(wavs[rows, :length].contiguous(), torch.ones(len(rows)))
            if out is None:
                out = torch.empty(wavs.shape[0], emb.shape[1])
            out[rows] = emb
        return out

    def _run(self, wavs, lengths):
        if self.is_onnx:
            feed = {WAVEFORM_INPUTS[0]: wavs.numpy(), WAVEFORM_INPUTS[1]: lengths.numpy()}
            return torch.from_numpy(self.session.run(None, feed)[0])
        return self.module(wavs, lengths)
