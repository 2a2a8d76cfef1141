"""The inference worker: queued chat turns -> a ChatModel backend -> the turn's token stream."""
