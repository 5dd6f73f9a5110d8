"""Installable package: ``pip install .`` (``[onnx]``: ONNX Runtime; ``[test]``: test tools)."""
from setuptools import find_packages, setup

setup(
    name="fefa_speechbrain",
    version="0.1.0",
    description=(
        "Fine-grained Early Frequency Attention (Hajavi & Etemad) as SpeechBrain lobes, "
        "with the paper's backbones and a VoxCeleb recipe"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fefa_speechbrain", "fefa_speechbrain.*"]),
    package_data={"fefa_speechbrain": ["templates/*.md"]},
    python_requires=">=3.9",
    install_requires=[
        "speechbrain>=1.1",
        "torch>=2.6",  # torch.load defaults to weights_only=True (also in SpeechBrain's loads)
        "torchaudio",
        "hyperpyyaml",
        "soundfile",
        "numpy",
        "sentencepiece",
        "matplotlib",
        "silero-vad",  # voice activity; its model ships in the wheel (MIT)
        "scikit-learn",  # diarization: SpeechBrain's spectral clustering and k-means use it
    ],
    extras_require={
        "test": ["pytest", "hypothesis"],
        "onnx": ["onnx", "onnxruntime"],  # ONNX export and ONNX Runtime inference
    },
    entry_points={"console_scripts": ["fefa-speechbrain=fefa_speechbrain.cli:main"]},
    license="Apache-2.0",
)
