"""Getting inputs to a model and results out: typed sources expanded once, decoding, batches,
the streamer and its core split, sinks, and a run to a folder."""
