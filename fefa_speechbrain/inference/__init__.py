"""Using a trained model: loading it (`model_source`), embeddings of files and recordings
(`embedder`), embedding files, input lengths and voice activity (`vad`)."""
