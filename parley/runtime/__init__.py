"""What every worker process runs on: the consumer loop and the services it runs
(:mod:`.service`: parse, handle, outcome hooks), the process wrapper with its health and metrics
endpoint, the heartbeat, and task helpers. The clients a process opens once are
:mod:`backends.clients`."""
