"""Data handling: audio reading, atomic writing, corpus preparation, the synthetic demo corpus."""
