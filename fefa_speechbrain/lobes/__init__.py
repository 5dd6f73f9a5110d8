"""SpeechBrain lobes: the FEFA modules, the backbones, pooling, features and heads."""
