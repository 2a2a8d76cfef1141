"""The ingest worker: blob event -> download -> extract text (PDF, DOCX) -> chunk -> chunk batches
out to the embed queue, with the document's status kept along the way."""
