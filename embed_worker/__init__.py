"""The embed worker: chunk batches -> embeddings -> idempotent upsert into Chroma; a document
turns ``ready`` when the last batch of its version lands."""
