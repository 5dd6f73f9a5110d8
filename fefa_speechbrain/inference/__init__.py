"""Using a trained model: voice activity, embeddings of files and recordings."""
