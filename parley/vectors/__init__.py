"""The vector store seam (:mod:`.store`), its Chroma adapter (:mod:`.chroma`) and the write marks
the re-embedding sweep reads (:mod:`.marks`)."""
