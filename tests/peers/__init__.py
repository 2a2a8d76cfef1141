"""Small protocol-level stand-ins for cloud services that cannot run here (no Docker), driven by
the real client SDKs over the wire. Each module says what it proves and what it does not."""
