"""Training throughput, FEFA's overhead, inference speed, peak memory and data loading.

Parts (``--parts``, all by default):

``train``
    Training steps (features from the waveform, normalization, model, classifier over
    5,994 speakers, loss, backward, Adam step) on a batch of ``--batch`` random
    waveforms of ``--crop`` seconds, for every backbone of the recipe with each FEFA
    placement, at the published width (``full``) and at the reduced width that
    ``bench_quality.py`` trains on CPU (``cpu``); and SpeechBrain's own ResNet and
    ECAPA-TDNN with their VoxCeleb recipes' configurations (80 fbanks, per-sentence
    mean normalization, AAM head), each with and without a FEFA in front
    (:class:`fefa_speechbrain.lobes.wrapper.FEFAWrapper`). The variants of one model run in
    the same fresh process, interleaved (A B C A B C ...), so that slow drifts of the
    machine hit every variant alike; the FEFA overhead is the median over repetitions
    of the per-repetition step-time ratio. Throughput is ``batch / median step time``.
    A control variant, ``none+input-grad`` (no FEFA, but the gradient with respect to
    the model's input is computed), shows what any trainable layer before the first
    convolution costs: its first convolution's input gradient (``--no-control`` drops it).
``memory``
    Peak memory of training: for each configuration a fresh process builds it and
    runs ``--memory-steps`` steps; reported are the peak resident set size
    (``ru_maxrss``) and its rise over the resident size before the first step
    (on CUDA: ``torch.cuda.max_memory_allocated``).
``inference``
    Real-time factor of embedding one ``--rtf-seconds`` utterance with one thread
    (``torch.set_num_threads(1)``), eager mode against ``torch.jit.trace`` (and
    ``torch.compile`` with ``--compile``), with the largest absolute difference of the
    embeddings between the two (same input, and a second input the trace never saw).
``deploy``
    The inference paths of a deployed model, one thread, one ``--rtf-seconds``
    utterance, for every backbone at full width with FEFA(S) and SpeechBrain's
    ECAPA-TDNN (80 fbanks, C=1024): PyTorch fp32, PyTorch bf16 autocast (where the CPU
    has avx512_bf16 or AMX), TorchScript and ONNX Runtime fp32 and static int8 (QDQ,
    per channel, calibrated on ``--deploy-calibration`` random inputs) of
    :mod:`fefa_speechbrain.graph_export`. Each model runs in a fresh process; its paths
    are timed interleaved (one call of each per round, ``--deploy-rounds`` rounds,
    medians), so the machine's load hits them alike: compare the ratios to fp32. The
    front-end (spectrogram + normalization, outside the graphs) is timed apart and added
    for the end-to-end RTF. Embedding change: max abs difference and lowest cosine to
    fp32 on an input no path was built with. Memory: the process's peak RSS after the
    model is built and has run once in PyTorch fp32 (before any export; imports of
    torch and SpeechBrain included), and at the end (exports, int8 calibration and
    every path included).
``jobs``
    What ``bench_quality.py --jobs`` should be on this machine: the training throughput
    of its CPU setting (batch 16, 1 s crops) with one process of ``--threads`` threads
    against ``--threads`` concurrent one-thread processes.
``loader``
    Whether data loading keeps up: utterances per second delivered by the recipe's
    data pipeline (:func:`fefa_speechbrain.data.dataset.speaker_dataset`, SpeechBrain's
    dataloader) reading random ``--crop`` second crops of 3 s FLAC files (written to a
    temporary folder), for each ``--loader-workers`` count, to compare with the
    training throughput.

Every figure is a measurement of this run; the output JSON keeps the command, the
machine, the load average before and after, and the repetition counts. Full-width
models are slow on a CPU: they run ``--full-reps`` repetitions only.

Examples
--------
python benchmarks/bench_speed.py --quick                  # checks, a few minutes
python benchmarks/bench_speed.py --threads 2              # CPU, everything
python benchmarks/bench_speed.py --device cuda --precision bf16 --threads 16 \\
    --out benchmarks/results/speed_cuda_bf16.json
"""

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time

import protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(REPO, "recipes", "VoxCeleb", "FEFA", "hparams")
N_SPEAKERS = 5994  # VoxCeleb2 dev
VOX2_DEV_UTTERANCES = 1_092_009
SAMPLE_RATE = 16000

# backbone -> (recipe yaml, FEFA placements)
BACKBONES = {
    "vggm_tap": ("train_vggm_tap.yaml", ("none", "single", "multi")),
    "thin_resnet34_tap": ("train_thin_resnet34_tap.yaml", ("none", "single", "multi")),
    "thin_resnet34_gvlad": ("train_thin_resnet34_gvlad.yaml", ("none", "single", "multi")),
    "thin_seresnet34_tap": ("train_thin_seresnet34_tap.yaml", ("none", "single", "multi")),
    "ecapa_spectrogram": ("train_ecapa_fefa.yaml", ("none", "single")),
}
SB_MODELS = ("sb_resnet", "sb_ecapa")
# width name -> overrides of the recipe (ECAPA has channels instead of a width)
WIDTHS = {"full": (1.0, 1024), "cpu": (0.125, 128)}
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
# Control variant of the training groups: no FEFA, but the gradient with respect to the
# model's input is computed, as it must be when a trained FEFA sits before the first layer.
INPUT_GRAD = "none+input-grad"


# ----------------------------------------------------------------------- model building


def recipe_modules(backbone, fefa, width_name, tmpdir):
    """The recipe's modules and loss for one configuration, from its hparams yaml."""
    from fefa_speechbrain.hparams import load_hparams

    yaml_name, _ = BACKBONES[backbone]
    width, ecapa_channels = WIDTHS[width_name]
    overrides = {
        "data_folder": tmpdir,
        "verification_file": None,
        "output_folder": os.path.join(tmpdir, f"{backbone}_{fefa}_{width_name}"),
        "n_speakers": N_SPEAKERS,
        "fefa": fefa,
    }
    if backbone.startswith("ecapa"):
        overrides["ecapa_channels"] = ecapa_channels
    else:
        overrides["width"] = width
    hparams = load_hparams(os.path.join(HPARAMS, yaml_name), overrides)
    return dict(hparams["modules"]), hparams["compute_cost"]


def speechbrain_modules(name, fefa):
    """SpeechBrain's ResNet / ECAPA-TDNN as its VoxCeleb recipes configure them."""
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.lobes.models.ResNet import ResNet
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    from speechbrain.processing.features import InputNormalization

    from fefa_speechbrain.lobes.wrapper import FEFAWrapper

    if name == "sb_resnet":
        model = ResNet(
            input_size=80,
            channels=[128, 128, 256, 256],
            strides=[1, 2, 2, 2],
            block_sizes=[3, 4, 6, 3],
            lin_neurons=256,
        )
        emb_dim = 256
    else:
        model = ECAPA_TDNN(
            80,
            channels=[1024, 1024, 1024, 1024, 3072],
            kernel_sizes=[5, 3, 3, 3, 1],
            dilations=[1, 2, 3, 4, 1],
            attention_channels=128,
            lin_neurons=192,
        )
        emb_dim = 192
    modules = {
        "compute_features": Fbank(n_mels=80),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": FEFAWrapper(model, n_bins=80, fefa=fefa),
        "classifier": Classifier(input_size=emb_dim, out_neurons=N_SPEAKERS),
    }
    cost = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    return modules, cost


def build(config, tmpdir):
    """(modules, cost) for a config dict with keys model, fefa, width."""
    fefa = "none" if config["fefa"] == INPUT_GRAD else config["fefa"]
    if config["model"] in SB_MODELS:
        return speechbrain_modules(config["model"], fefa)
    return recipe_modules(config["model"], fefa, config["width"], tmpdir)


def config_name(config):
    """A short label, e.g. ``thin_resnet34_tap/single/cpu``."""
    return f"{config['model']}/{config['fefa']}/{config['width']}"


def count_parameters(module):
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------ training step


class Trainer:
    """One configuration's training step on a fixed random batch."""

    def __init__(self, config, settings, tmpdir):
        import torch

        self.torch = torch
        self.device = torch.device(settings["device"])
        modules, self.cost = build(config, tmpdir)
        self.modules = {key: module.to(self.device).train() for key, module in modules.items()}
        trained = [self.modules["embedding_model"], self.modules["classifier"]]
        params = [p for module in trained for p in module.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=1e-3)
        self.dtype = PRECISIONS[settings["precision"]]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "float16")
        generator = torch.Generator().manual_seed(settings["seed"])
        samples = int(round(settings["crop"] * SAMPLE_RATE))
        batch = settings["batch"]
        self.wavs = (0.1 * torch.randn(batch, samples, generator=generator)).to(self.device)
        self.lens = torch.ones(batch, device=self.device)
        labels = torch.randint(0, N_SPEAKERS, (batch, 1), generator=generator)
        self.labels = labels.to(self.device)
        self.parameters = count_parameters(self.modules["embedding_model"])
        self.input_grad = config["fefa"] == INPUT_GRAD

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=getattr(self.torch, self.dtype))

    def step(self):
        """One optimizer step; returns its wall time in seconds."""
        from fefa_speechbrain.lobes.features import feature_lengths

        torch, m = self.torch, self.modules
        self._synchronize()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            feats = m["compute_features"](self.wavs)
            lens = feature_lengths(m["compute_features"], self.lens, self.wavs.shape[1])
            feats = m["mean_var_norm"](feats, lens)
            if self.input_grad:
                feats.requires_grad_()
            logits = m["classifier"](m["embedding_model"](feats, lens))
            loss = self.cost(logits.float(), self.labels, self.lens)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._synchronize()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss for {self.modules['embedding_model']}")
        return time.perf_counter() - start

    def _synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def _set_threads(settings):
    import torch

    torch.set_num_threads(settings["threads"])
    torch.manual_seed(settings["seed"])


def time_group(configs, settings, warmup, reps):
    """Interleaved step times of several configurations in this process.

    Returns a dict per config: step times, median, throughput, parameters.
    """
    _set_threads(settings)
    with tempfile.TemporaryDirectory() as tmpdir:
        trainers = [Trainer(config, settings, tmpdir) for config in configs]
        for trainer in trainers:
            for _ in range(warmup):
                trainer.step()
        times = [[] for _ in trainers]
        for _ in range(reps):
            for index, trainer in enumerate(trainers):
                times[index].append(trainer.step())
    results = []
    for config, trainer, steps in zip(configs, trainers, times):
        median = statistics.median(steps)
        results.append(
            dict(
                config,
                name=config_name(config),
                parameters=trainer.parameters,
                step_seconds=steps,
                median_step_seconds=median,
                utterances_per_second=settings["batch"] / median,
            )
        )
    return results


def overhead_ratios(results, baseline_fefa="none"):
    """Per-variant median over repetitions of (step time / baseline step time)."""
    baseline = next(r for r in results if r["fefa"] == baseline_fefa)
    for result in results:
        ratios = [t / b for t, b in zip(result["step_seconds"], baseline["step_seconds"])]
        result["ratio_to_" + baseline_fefa] = statistics.median(ratios)
    return results


def run_in_fresh_process(function, *args):
    """Runs ``function(*args)`` in a new spawned process (own memory peak, own threads).

    Returns (its result, the share of the machine's CPU other processes used meanwhile).
    """
    context = multiprocessing.get_context("spawn")
    with protocol.OtherCpuShare() as other:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            result = pool.submit(function, *args).result()
    return result, other.share


def train_part(settings, widths, backbones, log):
    """Training throughput of every backbone x FEFA placement x width, and SB's models."""
    results = []
    for width in widths:
        warmup, reps = settings["warmup"], settings["reps"]
        if width == "full":
            warmup, reps = settings["full_warmup"], settings["full_reps"]
        for backbone in backbones:
            placements = BACKBONES[backbone][1]
            if settings["control"]:
                placements += (INPUT_GRAD,)
            configs = [{"model": backbone, "fefa": fefa, "width": width} for fefa in placements]
            log(f"train: {backbone} at width '{width}', {warmup} warm-up + {reps} steps each")
            group, share = run_in_fresh_process(time_group, configs, settings, warmup, reps)
            results.extend(dict(r, others_cpu_share=share) for r in overhead_ratios(group))
    if settings["sb_models"]:
        warmup, reps = settings["full_warmup"], settings["full_reps"]
        for name in SB_MODELS:
            configs = [
                {"model": name, "fefa": fefa, "width": "full"} for fefa in ("none", "single")
            ]
            ours = {"model": "thin_resnet34_gvlad", "fefa": "single", "width": "full"}
            log(f"train: {name} (+FEFA) against thin_resnet34_gvlad/single, {reps} steps each")
            group, share = run_in_fresh_process(
                time_group, configs + [ours], settings, warmup, reps
            )
            group = [dict(r, others_cpu_share=share) for r in overhead_ratios(group)]
            reference = group[0]
            for result in group:
                ratios = [
                    t / b for t, b in zip(result["step_seconds"], reference["step_seconds"])
                ]
                result["ratio_to_" + name] = statistics.median(ratios)
                result["group"] = name
            results.extend(group)
    return results


# ------------------------------------------------------------------------------ memory


def _current_rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory(config, settings):
    """Builds one configuration and runs a few steps; returns its memory figures."""
    import torch

    _set_threads(settings)
    with tempfile.TemporaryDirectory() as tmpdir:
        trainer = Trainer(config, settings, tmpdir)
        before = _current_rss_mib()
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        for _ in range(settings["memory_steps"]):
            trainer.step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        result = dict(
            config,
            name=config_name(config),
            steps=settings["memory_steps"],
            rss_before_mib=before,
            peak_rss_mib=peak,
            peak_rss_rise_mib=max(peak - before, 0.0),
        )
        if trainer.device.type == "cuda":
            result["cuda_peak_allocated_mib"] = (
                torch.cuda.max_memory_allocated(trainer.device) / 2**20
            )
    return result


def memory_part(settings, widths, backbones, log):
    """Peak training memory of every configuration, each in a fresh process."""
    results = []
    for width in widths:
        for backbone in backbones:
            for fefa in BACKBONES[backbone][1]:
                config = {"model": backbone, "fefa": fefa, "width": width}
                log(f"memory: {config_name(config)}")
                result, share = run_in_fresh_process(peak_memory, config, settings)
                results.append(dict(result, others_cpu_share=share))
    if settings["sb_models"]:
        for name in SB_MODELS:
            config = {"model": name, "fefa": "none", "width": "full"}
            log(f"memory: {config_name(config)}")
            result, share = run_in_fresh_process(peak_memory, config, settings)
            results.append(dict(result, others_cpu_share=share))
    return results


# ---------------------------------------------------------------------------- inference


def embedding_pipeline(modules):
    """waveform [batch, samples] -> embeddings [batch, dim], as a traceable module."""
    import torch

    from fefa_speechbrain.lobes.features import feature_lengths

    class EmbeddingPipeline(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.compute_features = modules["compute_features"]
            self.mean_var_norm = modules["mean_var_norm"]
            self.embedding_model = modules["embedding_model"]

        def forward(self, wavs):
            lens = torch.ones(wavs.shape[0], device=wavs.device)
            feats = self.compute_features(wavs)
            lens = feature_lengths(self.compute_features, lens, wavs.shape[1])
            feats = self.mean_var_norm(feats, lens)
            return self.embedding_model(feats, lens).flatten(1)

    return EmbeddingPipeline().eval()


def _median_seconds(function, wavs, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(wavs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inference_speed(config, settings):
    """Eager vs traced (vs compiled) real-time factor and embedding parity, one thread."""
    import warnings

    import torch

    torch.set_num_threads(1)
    torch.manual_seed(settings["seed"])
    seconds = settings["rtf_seconds"]
    generator = torch.Generator().manual_seed(settings["seed"])
    wavs = 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=generator)
    other = 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=generator)
    repeats = settings["rtf_repeats"]
    with tempfile.TemporaryDirectory() as tmpdir:
        modules, _ = build(config, tmpdir)
        pipeline = embedding_pipeline(modules)
        result = dict(config, name=config_name(config), audio_seconds=seconds, repeats=repeats)
        with torch.no_grad():
            pipeline(wavs)  # warm-up
            eager = _median_seconds(pipeline, wavs, repeats)
            result["eager_rtf"] = eager / seconds
            reference, reference_other = pipeline(wavs), pipeline(other)
            paths = {"jit_trace": lambda: torch.jit.trace(pipeline, wavs, check_trace=False)}
            if settings["compile"]:
                paths["compile"] = lambda: torch.compile(pipeline)
            for label, make in paths.items():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        start = time.perf_counter()
                        fast = make()
                        fast(wavs)
                        result[f"{label}_setup_seconds"] = time.perf_counter() - start
                    result[f"{label}_rtf"] = _median_seconds(fast, wavs, repeats) / seconds
                    result[f"{label}_max_abs_diff"] = float((fast(wavs) - reference).abs().max())
                    result[f"{label}_max_abs_diff_unseen_input"] = float(
                        (fast(other) - reference_other).abs().max()
                    )
                    result[f"{label}_embedding_max_abs"] = float(reference.abs().max())
                except Exception as err:  # report the failure, keep measuring the rest
                    result[f"{label}_error"] = f"{type(err).__name__}: {err}"[:300]
    return result


def inference_part(settings, backbones, log):
    """Inference RTF at full width, FEFA none and single, per backbone."""
    results = []
    for backbone in backbones:
        for fefa in ("none", "single"):
            config = {"model": backbone, "fefa": fefa, "width": settings["rtf_width"]}
            log(f"inference: {config_name(config)}")
            result, share = run_in_fresh_process(inference_speed, config, settings)
            results.append(dict(result, others_cpu_share=share))
    return results


# ------------------------------------------------------------------------------- deploy

DEPLOY_MODELS = ("vggm_tap", "thin_resnet34_tap", "thin_resnet34_gvlad", "thin_seresnet34_tap",
                 "ecapa_spectrogram", "sb_ecapa")


def cpu_has_bf16():
    """Whether the CPU has bf16 arithmetic (avx512_bf16 or AMX) per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _quantize_int8(src, dst, inputs):
    """Static QDQ int8 (per channel) of an ONNX graph, calibrated on ``inputs``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"feats": f.numpy(), "lengths": l.numpy()} for f, l in inputs])

        def get_next(self):
            return next(self.items, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def deploy_speed(model_name, settings):
    """Interleaved timings of every inference path of one model (fresh process)."""
    import torch

    from fefa_speechbrain.graph_export import GraphModel, export_graph

    torch.set_num_threads(1)
    seconds, rounds = settings["rtf_seconds"], settings["deploy_rounds"]
    generator = torch.Generator().manual_seed(settings["seed"])
    wavs = 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=generator)
    unseen = 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=generator)
    ones = torch.ones(1)
    config = {"model": model_name, "fefa": "none" if model_name == "sb_ecapa" else "single",
              "width": settings["rtf_width"]}
    result = dict(config, name=config_name(config), audio_seconds=seconds, rounds=rounds,
                  paths={})
    with tempfile.TemporaryDirectory() as tmpdir, torch.no_grad():
        modules, _ = build(config, tmpdir)
        for module in modules.values():
            module.eval()
        model = modules["embedding_model"]

        def front_end(signal):
            feats = modules["compute_features"](signal)
            return modules["mean_var_norm"](feats, ones), ones

        feats, lengths = front_end(wavs)
        unseen_input = front_end(unseen)
        runners = {"pytorch_fp32": lambda f, l: model(f, l).flatten(1)}
        runners["pytorch_fp32"](feats, lengths)  # before any export: the PyTorch path's peak
        result["peak_rss_mib_after_fp32"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if cpu_has_bf16():
            def bf16(f, l):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(f, l).flatten(1).float()
            runners["pytorch_bf16"] = bf16
        errors = {}
        for label, fmt, suffix in (("torchscript", "torchscript", ".pt"),
                                   ("onnxruntime_fp32", "onnx", ".onnx")):
            path = os.path.join(tmpdir, label + suffix)
            try:
                start = time.perf_counter()
                export_graph(model, path, fmt, n_bins=feats.shape[-1])
                result[f"{label}_export_seconds"] = time.perf_counter() - start
                graph = GraphModel(path)
                runners[label] = lambda f, l, graph=graph: graph(f, l).flatten(1)
            except Exception as err:  # report, keep measuring the rest
                errors[label] = f"{type(err).__name__}: {err}"[:300]
        if "onnxruntime_fp32" in runners:
            try:
                calibration = [front_end(0.1 * torch.randn(1, int(3 * SAMPLE_RATE), generator=generator))
                               for _ in range(settings["deploy_calibration"])]
                int8_path = os.path.join(tmpdir, "int8.onnx")
                _quantize_int8(os.path.join(tmpdir, "onnxruntime_fp32.onnx"), int8_path, calibration)
                graph = GraphModel(int8_path)
                runners["onnxruntime_int8"] = lambda f, l, graph=graph: graph(f, l).flatten(1)
            except Exception as err:
                errors["onnxruntime_int8"] = f"{type(err).__name__}: {err}"[:300]
        reference = runners["pytorch_fp32"](*unseen_input)
        times = {label: [] for label in runners}
        times["front_end"] = []
        for run in runners.values():  # warm-up
            run(feats, lengths)
        for _ in range(rounds):
            start = time.perf_counter()
            front_end(wavs)
            times["front_end"].append(time.perf_counter() - start)
            for label, run in runners.items():
                start = time.perf_counter()
                run(feats, lengths)
                times[label].append(time.perf_counter() - start)
        front = statistics.median(times["front_end"])
        result["front_end_rtf"] = front / seconds
        fp32 = statistics.median(times["pytorch_fp32"])
        for label, run in runners.items():
            median = statistics.median(times[label])
            output = run(*unseen_input)
            cosine = torch.nn.functional.cosine_similarity(output, reference, dim=-1).min()
            result["paths"][label] = {
                "rtf_model": median / seconds,
                "rtf_end_to_end": (median + front) / seconds,
                "ratio_to_fp32": median / fp32,
                "max_abs_diff": float((output - reference).abs().max()),
                "embedding_max_abs": float(reference.abs().max()),
                "min_cosine_to_fp32": float(cosine),
            }
        result["errors"] = errors
        result["peak_rss_mib_end"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return result


def deploy_part(settings, log):
    """Every deployment path of every model at full width, each model in a fresh process."""
    results = []
    for name in settings["deploy_models"]:
        log(f"deploy: {name} (load average {protocol.load_average()})")
        before = protocol.load_average()
        result, share = run_in_fresh_process(deploy_speed, name, settings)
        results.append(dict(result, others_cpu_share=share, load_average_before=before,
                            load_average_after=protocol.load_average()))
    return results


def deploy_table(results):
    rows = []
    for r in results:
        for label, p in r["paths"].items():
            rows.append([r["name"], label, _fmt(p["rtf_model"], 4), _fmt(p["rtf_end_to_end"], 4),
                         _fmt(p["ratio_to_fp32"], 2), f"{p['max_abs_diff']:.1e}",
                         f"{p['min_cosine_to_fp32']:.5f}", _fmt(r["peak_rss_mib_after_fp32"], 0),
                         _fmt(r["peak_rss_mib_end"], 0), r["load_average_before"], _share(r)])
        for label, error in r["errors"].items():
            rows.append([r["name"], label, "", "", "", "", "", "", "", "", error])
    header = ["model", "path", "RTF model", "RTF end-to-end", "time / fp32", "max abs diff",
              "min cosine", "peak RSS after fp32 (MiB)", "peak RSS all paths (MiB)",
              "load avg before", "others' CPU"]
    return protocol.markdown_table(header, rows)


# --------------------------------------------------------------------------------- jobs


def _steps_per_second(config, settings, steps):
    """Training throughput (utt/s) of ``steps`` steps after one warm-up step."""
    _set_threads(settings)
    with tempfile.TemporaryDirectory() as tmpdir:
        trainer = Trainer(config, settings, tmpdir)
        trainer.step()
        total = sum(trainer.step() for _ in range(steps))
    return settings["batch"] * steps / total


def jobs_part(settings, log):
    """One process with all threads vs one single-thread process per thread, concurrently."""
    config = {"model": "thin_resnet34_tap", "fefa": "single", "width": "cpu"}
    quality = dict(settings, batch=16, crop=1.0)
    steps = settings["jobs_steps"]
    threads = settings["threads"]
    log(f"jobs: 1 process x {threads} threads")
    single, single_share = run_in_fresh_process(_steps_per_second, config, quality, steps)
    log(f"jobs: {threads} processes x 1 thread, concurrently")
    context = multiprocessing.get_context("spawn")
    one_thread = dict(quality, threads=1)
    with protocol.OtherCpuShare() as other:
        with concurrent.futures.ProcessPoolExecutor(threads, mp_context=context) as pool:
            futures = [
                pool.submit(_steps_per_second, config, one_thread, steps) for _ in range(threads)
            ]
            parallel = [future.result() for future in futures]
    return {
        "config": config_name(config),
        "batch": 16,
        "crop_seconds": 1.0,
        "steps": steps,
        "one_process_utt_per_s": single,
        "threads": threads,
        "concurrent_processes_utt_per_s": parallel,
        "concurrent_total_utt_per_s": sum(parallel),
        "faster": "jobs" if sum(parallel) > single else "threads",
        "others_cpu_share": [single_share, other.share],
    }


# ------------------------------------------------------------------------------- loader


def _write_random_flacs(folder, n_files, seconds, seed):
    import numpy as np
    import soundfile

    rng = np.random.default_rng(seed)
    rows = []
    samples = int(seconds * SAMPLE_RATE)
    for index in range(n_files):
        speaker = f"spk{index % 50:03d}"
        path = os.path.join(folder, f"{speaker}_{index:05d}.flac")
        soundfile.write(path, 0.1 * rng.standard_normal(samples), SAMPLE_RATE)
        rows.append([f"utt{index:05d}", seconds, path, 0, samples, speaker])
    return rows


def loader_throughput(settings, workers, n_files, passes):
    """Utterances per second from the recipe's data pipeline with ``workers`` workers."""
    import speechbrain as sb

    from fefa_speechbrain.atomic import atomic_write_csv
    from fefa_speechbrain.data.dataset import speaker_dataset

    with tempfile.TemporaryDirectory() as folder:
        rows = _write_random_flacs(folder, n_files, 3.0, settings["seed"])
        csv_path = os.path.join(folder, "train.csv")
        atomic_write_csv(csv_path, rows, ["ID", "duration", "wav", "start", "stop", "spk_id"])
        dataset = speaker_dataset(csv_path, crop_seconds=settings["crop"])
        dataset.set_output_keys(["id", "sig"])
        options = {"batch_size": settings["batch"], "shuffle": True, "drop_last": True,
                   "num_workers": workers}
        if workers and "fork" in multiprocessing.get_all_start_methods():
            # as the recipe runs on Linux (this function itself runs in a spawned process)
            options["multiprocessing_context"] = multiprocessing.get_context("fork")
        loader = sb.dataio.dataloader.make_dataloader(dataset, **options)
        for _ in loader:  # warm-up pass (file cache, worker start)
            break
        start, count = time.perf_counter(), 0
        for _ in range(passes):
            for batch in loader:
                count += batch.sig[0].shape[0]
        return count / (time.perf_counter() - start)


def loader_part(settings, log):
    """Loader throughput for each worker count."""
    results = []
    for workers in settings["loader_workers"]:
        log(f"loader: num_workers={workers}")
        rate, share = run_in_fresh_process(
            loader_throughput, settings, workers, settings["loader_files"], 2
        )
        results.append(
            {"num_workers": workers, "utterances_per_second": rate, "others_cpu_share": share}
        )
    return results


# ------------------------------------------------------------------------------ reports


def _fmt(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def _share(result):
    """Others' CPU share as a percentage cell (empty where unknown)."""
    share = result.get("others_cpu_share")
    return "" if share is None else f"{100 * share:.0f}%"


def train_table(results, device):
    """Markdown: throughput per configuration and ratios to the same model without FEFA."""
    rows = []
    for r in results:
        if r.get("group"):
            continue
        rows.append(
            [r["model"], r["width"], r["fefa"], f"{r['parameters'] / 1e6:.2f}",
             _fmt(r["median_step_seconds"], 3), _fmt(r["utterances_per_second"], 1),
             _fmt(r["ratio_to_none"], 3), len(r["step_seconds"]), _share(r)]
        )
    header = ["model", "width", "FEFA", "params (M)", "step (s)", "utt/s",
              "step time / no FEFA", "steps timed", "others' CPU"]
    text = protocol.markdown_table(header, rows)
    for name in SB_MODELS:
        group = [r for r in results if r.get("group") == name]
        if not group:
            continue
        rows = [
            [r["name"], f"{r['parameters'] / 1e6:.2f}", _fmt(r["median_step_seconds"], 3),
             _fmt(r["utterances_per_second"], 1), _fmt(r["ratio_to_" + name], 3),
             len(r["step_seconds"]), _share(r)]
            for r in group
        ]
        text += f"\n\n{name} (SpeechBrain recipe config), same process, interleaved:\n\n"
        text += protocol.markdown_table(
            ["config", "params (M)", "step (s)", "utt/s", f"step time / {name}", "steps timed",
             "others' CPU"],
            rows,
        )
    if device.startswith("cuda"):
        epoch = [
            [r["name"], _fmt(VOX2_DEV_UTTERANCES / r["utterances_per_second"] / 3600, 2)]
            for r in results
            if not r.get("group")
        ]
        text += "\n\nExtrapolated VoxCeleb2-dev epoch (1,092,009 crops) on this device:\n\n"
        text += protocol.markdown_table(["config", "hours per epoch"], epoch)
    return text


def memory_table(results):
    rows = [
        [r["name"], _fmt(r["peak_rss_mib"], 0), _fmt(r["peak_rss_rise_mib"], 0),
         _fmt(r.get("cuda_peak_allocated_mib"), 0), _share(r)]
        for r in results
    ]
    header = ["config", "peak RSS (MiB)", "rise during training (MiB)", "CUDA peak (MiB)",
              "others' CPU"]
    return protocol.markdown_table(header, rows)


def inference_table(results):
    rows = []
    for r in results:
        rows.append(
            [r["name"], _fmt(r["eager_rtf"], 4), _fmt(r.get("jit_trace_rtf"), 4),
             f"{r.get('jit_trace_max_abs_diff', float('nan')):.1e}",
             f"{r.get('jit_trace_max_abs_diff_unseen_input', float('nan')):.1e}",
             _fmt(r.get("compile_rtf"), 4),
             r.get("jit_trace_error", r.get("compile_error", "")), _share(r)]
        )
    header = ["config", "eager RTF", "jit.trace RTF", "max abs diff", "max abs diff (unseen input)",
              "compile RTF", "error", "others' CPU"]
    return protocol.markdown_table(header, rows)


def markdown_report(report):
    settings = report["settings"]
    parts = [
        f"# Speed ({settings['device']}, {settings['precision']}, {settings['threads']} threads)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} CPUs, "
        f"{report['machine']['memory_gib']} GiB; torch {report['machine']['torch']}, "
        f"speechbrain {report['machine']['speechbrain']}; load average before "
        f"{report['machine']['load_average_at_start']}, after {report['load_average_at_end']}  ",
        f"Date: {report['machine']['date']}",
        "",
        "\"others' CPU\": share of the machine's CPU time used by other processes while the "
        "measurement ran (0% = quiet); figures with more than a few percent were disturbed.",
    ]
    if "train" in report:
        parts += ["", f"## Training (batch {settings['batch']}, {settings['crop']} s crops)", "",
                  train_table(report["train"], settings["device"])]
    if "memory" in report:
        parts += ["", "## Peak training memory", "", memory_table(report["memory"])]
    if "inference" in report:
        parts += ["", f"## Inference, one thread, {settings['rtf_seconds']} s utterance", "",
                  inference_table(report["inference"])]
    if "deploy" in report:
        parts += ["", f"## Inference paths, one thread, {settings['rtf_seconds']} s utterance, "
                  f"{settings['rtf_width']} width", "", deploy_table(report["deploy"])]
    if "jobs" in report:
        j = report["jobs"]
        parts += ["", "## bench_quality.py --jobs", "",
                  f"{j['config']}, batch 16, 1 s crops: one process x {j['threads']} threads "
                  f"{j['one_process_utt_per_s']:.1f} utt/s; {j['threads']} one-thread processes "
                  f"together {j['concurrent_total_utt_per_s']:.1f} utt/s -> use "
                  f"{'--jobs ' + str(j['threads']) if j['faster'] == 'jobs' else '--jobs 1'} "
                  "(others' CPU share: "
                  + ", ".join(_share({"others_cpu_share": v}) for v in j["others_cpu_share"])
                  + ")."]
    if "loader" in report:
        rows = [[r["num_workers"], _fmt(r["utterances_per_second"], 1), _share(r)]
                for r in report["loader"]]
        parts += ["", f"## Data loading ({settings['crop']} s crops of 3 s FLAC files)", "",
                  protocol.markdown_table(["num_workers", "utt/s", "others' CPU"], rows)]
    return "\n".join(parts)


# --------------------------------------------------------------------------------- main

PARTS = ("train", "memory", "inference", "deploy", "jobs", "loader")


def default_output(args):
    """``benchmarks/results/speed_<device>_<precision>[_<parts>][_<widths>][_quick].json``."""
    name = f"speed_{args.device.split(':')[0]}_{args.precision}"
    if set(args.parts) != set(PARTS):
        name += "_" + "-".join(args.parts)
    if set(args.widths) != set(WIDTHS) and not args.quick:
        name += "_" + "-".join(args.widths) + "-width"
    if args.quick:
        name += "_quick"
    return os.path.join(REPO, "benchmarks", "results", name + ".json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=None,
                        help="default: all (--quick: thin_resnet34_tap ecapa_spectrogram)")
    parser.add_argument("--widths", nargs="+", choices=list(WIDTHS), default=list(WIDTHS))
    parser.add_argument("--no-sb-models", dest="sb_models", action="store_false",
                        help="leave SpeechBrain's ResNet and ECAPA-TDNN out")
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help=f"leave out the '{INPUT_GRAD}' control variant (no FEFA, input "
                        "gradient computed): what training anything before the first layer costs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=float, default=2.0, help="seconds per training crop")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (cpu width)")
    parser.add_argument("--reps", type=int, default=6, help="timed steps per variant (cpu width)")
    parser.add_argument("--full-warmup", type=int, default=1)
    parser.add_argument("--full-reps", type=int, default=3, help="timed steps at full width")
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--rtf-seconds", type=float, default=10.0)
    parser.add_argument("--rtf-repeats", type=int, default=5)
    parser.add_argument("--rtf-width", choices=list(WIDTHS), default="full")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--deploy-models", nargs="+", choices=DEPLOY_MODELS, default=list(DEPLOY_MODELS))
    parser.add_argument("--deploy-rounds", type=int, default=5, help="interleaved rounds per model")
    parser.add_argument("--deploy-calibration", type=int, default=4,
                        help="random inputs calibrating the int8 graph")
    parser.add_argument("--jobs-steps", type=int, default=20)
    parser.add_argument("--loader-workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--loader-files", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="checks only: cpu width, thin-ResNet34 TAP and ECAPA, few steps")
    parser.add_argument("--out", default=None,
                        help="JSON output (markdown beside it); default "
                        "benchmarks/results/speed_<device>_<precision>[_quick].json")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones = args.backbones or ["thin_resnet34_tap", "ecapa_spectrogram"]
        args.widths = ["cpu"]
        args.warmup, args.reps, args.full_warmup, args.full_reps = 1, 2, 1, 1
        args.batch, args.crop, args.rtf_seconds, args.rtf_repeats = 8, 1.0, 2.0, 2
        args.rtf_width, args.jobs_steps, args.loader_files = "cpu", 3, 32
        args.memory_steps = 1
        args.deploy_models, args.deploy_rounds, args.deploy_calibration = ["thin_resnet34_tap"], 2, 1
        args.sb_models = False
    args.backbones = args.backbones or list(BACKBONES)
    for name in ("threads", "batch", "reps", "full_reps", "memory_steps", "rtf_repeats",
                 "jobs_steps", "loader_files"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.crop <= 0 or args.rtf_seconds <= 0:
        parser.error("--crop and --rtf-seconds must be positive")
    if args.precision != "fp32" and not args.device.startswith("cuda"):
        parser.error("--precision bf16/fp16 is meant for --device cuda (CPU runs fp32)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device on this machine")
    if args.out is None:
        args.out = default_output(args)
    return args


def main(argv=None):
    args = parse_args(argv)
    settings = {
        key: getattr(args, key)
        for key in ("device", "precision", "threads", "batch", "crop", "warmup", "reps",
                    "full_warmup", "full_reps", "memory_steps", "rtf_seconds", "rtf_repeats",
                    "rtf_width", "compile", "deploy_models", "deploy_rounds",
                    "deploy_calibration", "jobs_steps", "loader_workers", "loader_files",
                    "seed", "sb_models", "control", "quick")
    }
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    report = {
        "command": protocol.command_line(),
        "machine": protocol.machine_info(args.device),
        "settings": settings,
    }
    if "train" in args.parts:
        report["train"] = train_part(settings, args.widths, args.backbones, log)
    if "memory" in args.parts:
        report["memory"] = memory_part(settings, args.widths, args.backbones, log)
    if "inference" in args.parts:
        report["inference"] = inference_part(settings, args.backbones, log)
    if "deploy" in args.parts:
        report["deploy"] = deploy_part(settings, log)
    if "jobs" in args.parts and not args.device.startswith("cuda"):
        report["jobs"] = jobs_part(settings, log)
    if "loader" in args.parts:
        report["loader"] = loader_part(settings, log)
    report["load_average_at_end"] = protocol.load_average()
    report["wall_seconds"] = time.perf_counter() - started
    text = markdown_report(report)
    protocol.write_json(args.out, report)
    protocol.write_markdown(os.path.splitext(args.out)[0] + ".md", text)
    print(text)
    log(f"wrote {args.out} and its .md")


if __name__ == "__main__":
    main()
