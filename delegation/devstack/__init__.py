"""The embedded stack: Temporal dev server, the model file and the llama.cpp server."""
