"""One module per pipeline step, in data-flow order: sessionize -> train -> promote -> recommend -> publish."""
