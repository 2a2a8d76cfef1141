"""What every worker process runs on: the consumer loop, the process wrapper with its health and
metrics endpoint, the clients opened once per process, and task helpers."""
