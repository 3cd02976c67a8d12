"""The model: backbone resolution and loading, the heads table (backbone knowledge as data),
tokenisation and batching, token and feature caches, and batched inference."""
