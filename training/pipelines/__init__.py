"""One pipeline per model family: train → evaluate → report → checkpoint → export."""
