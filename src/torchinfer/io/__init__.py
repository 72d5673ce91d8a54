"""Getting inputs in (images, sources) and results out (sinks)."""
