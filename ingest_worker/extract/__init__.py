"""Text extraction, isolated in a child process: type sniffing and dispatch, one module per
format, the shared result types."""
